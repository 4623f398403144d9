"""Optimise every bundled sample in one run and print what happened, as a Markdown table.

    python benchmarks/optimize_samples.py [--seconds 3] [--json results.json] [sample ...]

Per sample: passes that fired (with counts; runtime lowerings marked "rt"), attention blocks
fused against the blocks the model has (its config's layer count), compute nodes before/after,
max error against eager at fp32 and at ``--lowp`` (bf16 by default; a second compilation, not
timed), and eager vs accelc median latency (timed in alternating rounds in this process, so both
see the same machine load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

import accelc
from accelc.api import measure_latency
from accelc.loader import load_model_file

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="*", help="sample names (default: all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per sample")
    parser.add_argument("--json", help="write the full reports here")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--lowp", default="bf16", choices=["bf16", "fp16", "none"],
                        help="also compile at this precision and report its max error (none: skip)")
    args = parser.parse_args()
    names = args.samples or sorted(p.stem for p in SAMPLES.glob("*.py") if not p.stem.startswith("_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"precision {args.precision}, backend {args.backend}\n")
    lowp = None if args.lowp == "none" else args.lowp
    print(f"| sample | backend | capture | passes fired (counts) | attention fused / present | nodes before → after "
          f"| max err {args.precision} | max err {lowp or '-'} | eager ms | accelc ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    reports = {}
    for name in names:
        loaded = load_model_file(str(SAMPLES / f"{name}.py"))
        fast = accelc.accelerate(loaded.module, loaded.inputs, backend=args.backend, precision=args.precision,
                                 source_file=loaded.path)
        report = fast.report
        if lowp:
            low = accelc.accelerate(loaded.module, loaded.inputs, backend=args.backend, precision=lowp,
                                    source_file=loaded.path)
            report["lowp"] = {"precision": lowp, "verification": low.report.get("verification"),
                              "fallback": low.report.get("fallback")}
            del low
        if fast.captured:
            report["latency"] = measure_latency(loaded.module, fast, loaded.inputs, torch.device("cpu"), seconds=args.seconds)
        reports[name] = report
        lowered = [dict(p, name=p["name"] + " (rt)") for p in report.get("runtime_lowering", []) if report["backend"] == "torch"]
        fired = ", ".join(
            f"{p['name']} {'/'.join(str(v) for k, v in p['stats'].items() if v and k != 'present')}"
            for p in report["passes"] + lowered if p["status"] == "fired"
        )
        attention = next((p["stats"] for p in report["passes"] if p["name"] == "fuse_attention"), {})
        layers = _attention_layers(loaded.module)
        lat = report.get("latency") or {}
        ver = report.get("verification") or {}
        low_err = ((report.get("lowp") or {}).get("verification") or {}).get("max_abs_error", float("nan"))
        print(
            f"| {name} | {report['backend']} | {report['capture']['method']} | {fired or 'none'} | "
            f"{attention.get('fused', 0)} / {layers if layers is not None else attention.get('present', 0)} | "
            f"{report['nodes'].get('before')} → {report['nodes'].get('after')} | "
            f"{ver.get('max_abs_error', float('nan')):.2g} | {low_err:.2g} | "
            f"{lat.get('eager', {}).get('median_ms', float('nan')):.2f} | {lat.get('accelc', {}).get('median_ms', float('nan')):.2f} | "
            f"{lat.get('speedup', float('nan')):.2f}× |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=2, default=str)
    return 0


def _attention_layers(model: torch.nn.Module) -> int | None:
    """Attention blocks a transformers model has (one per layer), from its config; None otherwise."""
    config = getattr(model, "config", None) or next((getattr(m, "config", None) for m in model.modules()
                                                      if getattr(m, "config", None) is not None), None)
    if config is None:
        return 0 if not any("attention" in type(m).__name__.lower() for m in model.modules()) else None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


if __name__ == "__main__":
    sys.exit(main())
