"""Optimise every bundled sample in one run and print what happened, as a Markdown table.

    python benchmarks/optimize_samples.py [--seconds 3] [--json results.json] [sample ...]

Per sample: capture method, passes that fired (with counts), compute nodes before/after, max
error against eager, and eager vs accelc median latency (timed in alternating rounds in this
process, so both see the same machine load).
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
    args = parser.parse_args()
    names = args.samples or sorted(p.stem for p in SAMPLES.glob("*.py") if not p.stem.startswith("_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"precision {args.precision}, backend {args.backend}\n")
    print("| sample | backend | capture | passes fired (counts) | nodes before → after | max abs error | eager ms | accelc ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    reports = {}
    for name in names:
        loaded = load_model_file(str(SAMPLES / f"{name}.py"))
        fast = accelc.accelerate(loaded.module, loaded.inputs, backend=args.backend, precision=args.precision,
                                 source_file=loaded.path)
        report = fast.report
        if fast.captured:
            report["latency"] = measure_latency(loaded.module, fast, loaded.inputs, torch.device("cpu"), seconds=args.seconds)
        reports[name] = report
        fired = ", ".join(
            f"{p['name']} ({', '.join(f'{k} {v}' for k, v in p['stats'].items() if v)})"
            for p in report["passes"] if p["status"] == "fired"
        )
        lat = report.get("latency") or {}
        ver = report.get("verification") or {}
        print(
            f"| {name} | {report['backend']} | {report['capture']['method']} | {fired or 'none'} | {report['nodes'].get('before')} → "
            f"{report['nodes'].get('after')} | {ver.get('max_abs_error', float('nan')):.2g} | "
            f"{lat.get('eager', {}).get('median_ms', float('nan')):.2f} | {lat.get('accelc', {}).get('median_ms', float('nan')):.2f} | "
            f"{lat.get('speedup', float('nan')):.2f}× |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
