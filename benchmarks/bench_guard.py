"""What the per-call input check costs: the MLP sample (the smallest model, where it shows most).

    python benchmarks/bench_guard.py            # full-size MLP sample, 2 threads
    python benchmarks/bench_guard.py --small
    python benchmarks/bench_guard.py --sample gpt2 --small   # token ids: the table-bound value check too

Three numbers, from one process:
- the check alone: ``Signature.mismatch(args)`` in a tight loop (microseconds per call);
- the accelerated module, ``fast(x)`` (check + runtime + output packing), against its runtime
  called directly, ``fast.runner.forward(x)``, timed in interleaved turns (``accelc.timing.compare_latency``);
- eager, for scale.
The CPU flags that matter for speed are printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "samples"))

import accelc  # noqa: E402
import accelc.cpu  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402


def cpu_flags() -> str:
    """The CPU flags that matter for speed, as the benchmarks print them (from accelc.cpu)."""
    flags = accelc.cpu.cpu_flags()
    if flags is None:
        return "unknown"
    wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "avx2")
    present = [flag for flag in wanted if flag in flags]
    return ", ".join(present) or "none of " + ", ".join(wanted)


def check_cost_us(signature, args, calls: int = 20000) -> float:
    for _ in range(1000):
        signature.mismatch(args)
    start = time.perf_counter()
    for _ in range(calls):
        signature.mismatch(args)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--sample", default="mlp", help="a module of samples/ (mlp, bert, gpt2, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import importlib

    sample = importlib.import_module(args.sample)
    model, inputs = sample.get_model(small=args.small).eval(), tuple(sample.get_inputs(small=args.small))
    rows = {}
    for backend in ("torch", "onnxruntime"):
        fast = accelc.accelerate(model, inputs, backend=backend)
        timings = compare_latency({"eager": model, "accelc": fast, "runtime_direct": fast.runner.forward}, [inputs],
                                  seconds=args.seconds)
        rows[backend] = {
            "check_alone_us": round(check_cost_us(fast.signature, inputs), 2),
            "eager_ms": round(timings["eager"].median_ms, 4),
            "accelc_ms": round(timings["accelc"].median_ms, 4),
            "runtime_direct_ms": round(timings["runtime_direct"].median_ms, 4),
            "signature": fast.report["dynamic"]["inputs"],
        }
        rows[backend]["guard_and_packing_us"] = round(1000 * (rows[backend]["accelc_ms"] - rows[backend]["runtime_direct_ms"]), 2)
    print(json.dumps({"cpu_flags": cpu_flags(), "sample": args.sample, "threads": args.threads, "small": args.small,
                      "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
