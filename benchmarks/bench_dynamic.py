"""Dynamic vs static shapes: what accelc's default (symbolic batch/sequence/image sizes) costs.

    python benchmarks/bench_dynamic.py                       # full-size samples, batch 1 and 8
    python benchmarks/bench_dynamic.py --models bert --batches 1 --seconds 4

For every sample and batch, on each backend, two builds from the same inputs: the default
(``dynamic=None``: sizes inferred and verified at several points) and ``dynamic=False`` (every
size pinned). Both are timed in interleaved turns in one process (``accelc.timing``), same
threads, same inputs; the ratio is static / dynamic (above 1: dynamic is faster). A second
static build, timed in the same turns, gives the A/A ratio static / static-again: two builds of
the same graph differ by that much for no reason but memory placement and noise, so a
static/dynamic ratio inside that spread is no evidence of a cost. Build times
are recorded too: the dynamic build verifies at more shapes. The same comparison runs inside
``run_suite.py --against accelc,accelc-static``; this script gives each pair a longer timing
budget, since a 3% question needs more samples than the suite's shared budget gives.

Writes ``benchmarks/results/dynamic-vs-static.json`` (with each build's dynamic spec, the points
it was verified at, and every refusal about sizes) and prints a markdown table with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import SAMPLES, load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402

OUT = os.path.join(HERE, "results", "dynamic-vs-static.json")


SHAPE_WORDS = ("symbolic", "dynamic", "static")


def shape_refusals(report: dict) -> list[str]:
    """Refusals of any stage (fx passes, runtime lowerings, ONNX passes) whose reason is about
    sizes, deduplicated, with a count."""
    counts: dict[str, int] = {}
    for r in report.get("refusals", []):  # every stage's, ONNX passes' included (stage "onnx")
        if any(word in r["reason"] for word in SHAPE_WORDS):
            key = f"{r['pass_name']}: {r['reason']}"
            counts[key] = counts.get(key, 0) + 1
    return [f"{key} (x{count})" for key, count in counts.items()]


def build(model, inputs, backend: str, dynamic):
    start = time.perf_counter()
    fast = accelc.accelerate(model, inputs, backend=backend, dynamic=dynamic)
    seconds = time.perf_counter() - start
    if not fast.captured or fast.report.get("backend_fallback"):
        raise RuntimeError(fast.report.get("fallback") or fast.report.get("backend_fallback"))
    return fast, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SAMPLES))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per row (three builds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        module = load_sample(name)
        model = sample_model(module, small=False)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = sample_inputs(module, small=False, batch=batch)
            for backend in args.backends.split(","):
                row = {"sample": name, "batch": batch, "backend": backend}
                try:
                    dynamic, row["build_dynamic_s"] = build(model, inputs, backend, None)
                    static, row["build_static_s"] = build(model, inputs, backend, False)
                    static_again, _ = build(model, inputs, backend, False)
                except Exception as exc:  # recorded, not hidden: the row says why it has no numbers
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    continue
                timings = compare_latency({"dynamic": dynamic, "static": static, "static_again": static_again},
                                          [inputs], seconds=args.seconds)
                ms = {name: t.median_ms for name, t in timings.items()}
                row |= {
                    "dynamic_ms": round(ms["dynamic"], 3),
                    "static_ms": round(ms["static"], 3),
                    "static_again_ms": round(ms["static_again"], 3),
                    "iterations": min(t.iterations for t in timings.values()),
                    "static_over_dynamic": round(ms["static"] / ms["dynamic"], 3),
                    "static_again_over_dynamic": round(ms["static_again"] / ms["dynamic"], 3),
                    "static_over_static_again": round(ms["static"] / ms["static_again"], 3),
                    "dynamic_spec": dynamic.report["dynamic"]["dynamic"],
                    "inputs": {i["name"]: i["shape"] for i in dynamic.report["dynamic"]["inputs"]},
                    "verified_at": dynamic.report["dynamic"]["verified_at"],
                    "narrowed": dynamic.report["dynamic"]["narrowed"],
                    "refusals_about_shapes": shape_refusals(dynamic.report),
                    "onnx_dynamic_axes": ((dynamic.report.get("onnx") or {}).get("export") or {}).get("dynamic_axes"),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                del dynamic, static, static_again
                _write(args.out, rows, args)
    _write(args.out, rows, args)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.seconds:g} s per row, interleaved\n")
    print("| sample | batch | backend | dynamic ms | static ms | static' ms | static/dynamic | static'/dynamic "
          "| A/A static/static' | build dynamic s | build static s | dynamic sizes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['sample']} | {r['batch']} | {r['backend']} |" + " – |" * 8 + f" {r['error'][:80]} |")
            continue
        sizes = ", ".join(f"{k} {lo}..{'' if hi is None else hi}" for k, (lo, hi) in r["dynamic_spec"].items())
        print(f"| {r['sample']} | {r['batch']} | {r['backend']} | {r['dynamic_ms']} | {r['static_ms']} | "
              f"{r['static_again_ms']} | {r['static_over_dynamic']} | {r['static_again_over_dynamic']} | "
              f"{r['static_over_static_again']} | {r['build_dynamic_s']:.1f} | {r['build_static_s']:.1f} | {sizes} |")
    return 0


def _write(path: str, rows: list, args) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"cpu_flags": cpu_flags(), "threads": args.threads, "seconds_per_row": args.seconds,
                   "torch": torch.__version__, "command": "python benchmarks/bench_dynamic.py " + " ".join(sys.argv[1:]),
                   "rows": rows}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
