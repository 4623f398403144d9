"""The dynamic-shape spec accelc infers for each full-size sample, and what refuses under it.

    python benchmarks/dynamic_specs.py [--small] [--models bert,gpt2] [--backend onnxruntime]

For each sample: the signature (which input dims are symbolic, and their ranges), the points the
final check verified, any range narrowed and why, and every pass refusal that mentions a
symbolic or dynamic size (fx passes, runtime lowerings and ONNX passes). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_suite import SAMPLES, load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402

SHAPE_WORDS = ("symbolic", "dynamic", "static")


def shape_refusals(report: dict) -> list[str]:
    """Refusals (any stage) whose reason is about sizes, deduplicated, with a count."""
    reasons: dict[str, int] = {}
    items = [(r["pass_name"], r["reason"]) for r in report.get("refusals", [])]
    onnx = report.get("onnx") or {}
    for record in onnx.get("onnx_passes", []):
        for item in record.get("items", []) if record.get("name") == "refusals" else []:
            items.append((item["pass_name"], item["reason"]))
    for name, reason in items:
        if any(word in reason for word in SHAPE_WORDS):
            key = f"{name}: {reason}"
            reasons[key] = reasons.get(key, 0) + 1
    return [f"{key} (x{count})" for key, count in reasons.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--models", default=",".join(SAMPLES))
    parser.add_argument("--backend", default="onnxruntime", help="torch | onnxruntime (the ONNX stage runs only with it)")
    args = parser.parse_args(argv)
    out = {}
    for name in args.models.split(","):
        module = load_sample(name)
        model, inputs = sample_model(module, args.small), sample_inputs(module, args.small, batch=1)
        start = time.perf_counter()
        fast = accelc.accelerate(model, inputs, backend=args.backend)
        report = fast.report
        spec = report.get("dynamic") or {}
        out[name] = {
            "inputs": {i["name"]: i["shape"] for i in spec.get("inputs", [])},
            "ranges": spec.get("dynamic"),
            "verified_at": spec.get("verified_at"),
            "narrowed": spec.get("narrowed"),
            "backend": report.get("backend"),
            "onnx_dynamic_axes": ((report.get("onnx") or {}).get("export") or {}).get("dynamic_axes"),
            "refusals_about_shapes": shape_refusals(report),
            "lowering": [f"{r['name']}: {r['status']}" for r in report.get("runtime_lowering", [])],
            "build_s": round(time.perf_counter() - start, 1),
        }
        print(f"{name}: {json.dumps(out[name]['inputs'])} {out[name]['ranges']}", file=sys.stderr, flush=True)
        del fast, model
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
