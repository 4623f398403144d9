"""Precision on the CPU: accelc at fp32, bf16, --precision auto and int8 against OpenVINO and torch.compile.

    python benchmarks/bench_precision.py                           # every sample, batch 1 and 8
    python benchmarks/bench_precision.py --models resnet50,bert --batches 1 --seconds 10
    python benchmarks/bench_precision.py --small --models mlp --batches 1 --seconds 0.5 --out /tmp/p.json

For every sample and batch, one ``accelc bench`` run (one process, the same inputs and threads,
every system timed in interleaved rounds) of: eager fp32; torch.compile with freezing on bf16
weights; OpenVINO with the f32 hint and at its own default (bf16 on CPUs with AVX512_BF16 or
AMX); accelc as a user runs it (``backend="auto"``) at fp32, at bf16, at ``precision="auto"``
(default tolerance) and at int8, without and with calibration inputs (three seeded variants of the
example: convolutions int8 too). Each row has its median latency, its relative error against
eager fp32 (max |out - eager| / max |eager|, worst output, over the bench's input sets), its
build time (capture or conversion to the first answer) and what it ran (accelc: the backend and
precision kept).

Writes ``benchmarks/results/precision-cpu.json`` and prints a markdown table headed by the CPU
flags: where the CPU has no native bf16 (neither ``avx512_bf16`` nor ``amx_bf16``), bf16 runs
are emulated and their speed says nothing about a machine that has it.
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

from accelc.bench import run_bench  # noqa: E402

OUT = os.path.join(HERE, "results", "precision-cpu.json")
SYSTEMS = ["eager", "compile-bf16", "openvino-f32", "openvino", "accelc-auto", "accelc-bf16", "accelc-precision-auto",
           "accelc-int8", "accelc-int8-calibrated"]
COLUMNS = {"eager": "eager fp32", "compile-bf16": "compile+freezing bf16", "openvino-f32": "OpenVINO f32",
           "openvino": "OpenVINO default", "accelc-auto": "accelc fp32", "accelc-bf16": "accelc bf16",
           "accelc-precision-auto": "accelc auto", "accelc-int8": "accelc int8",
           "accelc-int8-calibrated": "accelc int8 calibrated"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SAMPLES))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing budget per sample and batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="a subset of the columns, to rerun some")
    parser.add_argument("--small", action="store_true", help="the samples' small configs (a quick check of the script)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = []
    start = time.perf_counter()
    for name in args.models.split(","):
        module = load_sample(name)
        model = sample_model(module, small=args.small)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = sample_inputs(module, small=args.small, batch=batch)
            result = run_bench(model, inputs, model_name=name, systems=args.systems.split(","), seconds=args.seconds)
            runs.append({"sample": name, "batch": batch, "systems": [_row(s) for s in result.systems]})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            _write(args.out, runs, args, time.perf_counter() - start)
    print(table(runs, args.threads, args.seconds))
    return 0


def _row(system) -> dict:
    return {"name": system.name, "status": system.status, "reason": system.reason, "median_ms": system.median_ms,
            "relative_error": system.relative_error, "build_s": system.build_s, "note": system.note}


def table(runs: list, threads: int, seconds: float) -> str:
    """Markdown: one row per sample and batch, one column per system (ms, relative error, build s)."""
    lines = [f"CPU flags: {cpu_flags()}; {threads} threads; {seconds:g} s of interleaved timing per row; "
             "each cell: median ms / relative error / build s", ""]
    lines.append("| sample | batch | " + " | ".join(COLUMNS[s] for s in SYSTEMS) + " | accelc auto kept |")
    lines.append("|---|---|" + "---|" * (len(SYSTEMS) + 1))
    for run in runs:
        cells, by_name = [], {s["name"]: s for s in run["systems"]}
        for name in SYSTEMS:
            s = by_name.get(name)
            if s is None:
                cells.append("–")
                continue
            if s["status"] != "ok":
                cells.append(f"{s['status'] if s else 'missing'}: {(s or {}).get('reason', '')[:60]}")
                continue
            error = "0" if not s["relative_error"] else f"{s['relative_error']:.1e}"
            cells.append(f"{s['median_ms']:.2f} / {error} / {s['build_s']:.1f}")
        kept = (by_name.get("accelc-precision-auto") or {}).get("note", "")
        lines.append(f"| {run['sample']} | {run['batch']} | " + " | ".join(cells) + f" | {kept} |")
    return "\n".join(lines)


def _write(path: str, runs: list, args, elapsed: float) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"cpu_flags": cpu_flags(), "threads": args.threads, "seconds_per_row": args.seconds,
                   "torch": torch.__version__, "elapsed_s": round(elapsed, 1),
                   "command": "python benchmarks/bench_precision.py " + " ".join(sys.argv[1:]), "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
