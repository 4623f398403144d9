"""What the PyTorch runtime's lowering stage gains: the graph stage's output against the lowered
runtime built from it, timed interleaved with eager, per sample (batch 1, full size).

    python benchmarks/probe_lowering_gain.py --models cnn,mlp,bert

A bound on this gain would let ``auto`` skip building the PyTorch runtime when its unlowered graph
is already slower than another runtime by more than the lowering could win back; the spread across
samples (convolutions gain most) is why no such bound is used. Prints one line per sample with
the CPU flags.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import SAMPLES, load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402
from accelc.verify import verification_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SAMPLES))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; batch 1; median ms")
    for name in args.models.split(","):
        module = load_sample(name)
        model, inputs = sample_model(module, small=False), sample_inputs(module, small=False, batch=1)
        fast = accelc.accelerate(model, inputs, backend="torch")
        fired = [r["name"] for r in fast.report.get("runtime_lowering", []) if r["status"] == "fired"]
        timings = compare_latency({"graph": fast.graph_module, "lowered": fast.runner, "eager": model},
                                  verification_inputs(inputs, count=1, seed=5), seconds=args.seconds)
        graph, lowered, eager = (timings[k].median_ms for k in ("graph", "lowered", "eager"))
        print(f"{name}: eager {eager:.2f}, graph stage's output {graph:.2f}, lowered {lowered:.2f}: "
              f"lowering gains {graph / lowered:.2f}x (fired: {', '.join(fired) or 'none'})", flush=True)


if __name__ == "__main__":
    main()
