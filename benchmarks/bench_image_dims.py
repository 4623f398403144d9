"""What dynamic image sizes cost on ONNX Runtime: one image sample built three ways, timed together.

    python benchmarks/bench_image_dims.py                    # ResNet-50, batch 8
    python benchmarks/bench_image_dims.py --model cnn --batch 1

Builds: the default (batch, height and width dynamic), batch only (``dynamic={"height": False,
"width": False}``) and static; all three timed in one interleaved run (``accelc.timing``), same
threads and inputs. Prints each median and static/that (above 1: faster than static).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    module = load_sample(args.model)
    model, inputs = sample_model(module, small=False), sample_inputs(module, small=False, batch=args.batch)
    builds = {
        "batch, height, width dynamic": accelc.accelerate(model, inputs, backend=args.backend),
        "batch dynamic": accelc.accelerate(model, inputs, backend=args.backend, dynamic={"height": False, "width": False}),
        "static": accelc.accelerate(model, inputs, backend=args.backend, dynamic=False),
    }
    timings = compare_latency(builds, [inputs], seconds=args.seconds)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.model} batch {args.batch} on {args.backend}")
    for name, timing in timings.items():
        print(f"{name:<30} {timing.median_ms:9.2f} ms  ({timing.iterations} calls)  static/this "
              f"{timings['static'].median_ms / timing.median_ms:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
