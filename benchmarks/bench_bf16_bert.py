"""BERT-base, batch 1, sequence 128: ``--precision bf16`` through accelc vs fp32 eager (and fp32 accelc).

    python benchmarks/bench_bf16_bert.py [--rounds 15] [--json out.json]

Runs alternate (eager, accelc-fp32, accelc-bf16 each round) so a noisy machine slows all of them
alike, and reports medians. Also prints the bf16 outputs' max error against fp32 eager and
whether it is within the bf16 tolerance of accelc.verify.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samples"))

import accelc  # noqa: E402
from accelc.verify import compare_outputs, tolerance  # noqa: E402


def _time_once(fn, inputs, repeat: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(repeat):
            fn(*inputs)
    return (time.perf_counter() - start) / repeat * 1e3


def _native_bf16() -> str:
    """The CPU's native bf16 instruction sets (Linux /proc/cpuinfo flags), e.g. ``avx512_bf16 amx_bf16``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(sorted(f for f in set(flags) if f in ("avx512_bf16", "amx_bf16", "avx_ne_convert")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3, help="calls per timed sample")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import bert

    torch.manual_seed(0)
    model, inputs = bert.get_model(), bert.get_inputs()
    runners = {"eager fp32": model}
    reports = {}
    for precision in ("fp32", "bf16"):
        fast = accelc.accelerate(model, inputs, backend="torch", precision=precision)
        if fast.report["fallback"]:
            print(f"accelc {precision} fell back: {fast.report['fallback']}")
        runners[f"accelc {precision}"] = fast
        reports[precision] = fast.report

    with torch.inference_mode():
        reference = model(*inputs)
        low = runners["accelc bf16"](*inputs)
    cmp = compare_outputs(low, reference, lambda d: tolerance(torch.bfloat16) if d.is_floating_point else tolerance(d))

    for fn in runners.values():  # warm up (oneDNN primitive creation, allocator)
        _time_once(fn, inputs, 3)
    samples = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            samples[name].append(_time_once(fn, inputs, args.repeat))
    medians = {name: statistics.median(v) for name, v in samples.items()}

    eager = medians["eager fp32"]
    native = _native_bf16()
    print(f"BERT-base batch 1 seq 128, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          f"CPU bf16 instructions: {native or 'none (bf16 matmuls are emulated)'}")
    for name, ms in medians.items():
        print(f"  {name:12s} median {ms:8.2f} ms   speedup vs fp32 eager {eager / ms:5.2f}x")
    print(f"  bf16 vs fp32 eager: max abs error {cmp.max_abs_error:.3g} (rel {cmp.max_rel_error:.3g}), within bf16 tolerance: {cmp.ok}")
    for precision, report in reports.items():
        fired = {p["name"]: p["stats"] for p in report["passes"] if p["status"] == "fired"}
        print(f"  passes fired ({precision}): {fired}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median_ms": medians, "speedup_bf16": eager / medians["accelc bf16"],
                       "max_abs_error_bf16": cmp.max_abs_error, "within_tolerance": cmp.ok}, f, indent=2)


if __name__ == "__main__":
    main()
