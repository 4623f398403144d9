"""ResNet-50 (or another sample), batch 1: eager vs torch.compile with Inductor freezing vs accelc's
PyTorch runtime, in a fresh process with freezing compiled first (so no other compiled graph
can share Dynamo's cache entry), timed in interleaved turns.

    python benchmarks/compare_freezing.py [sample] [--seconds 20]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

import torch
import torch._inductor.config as inductor_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples"))

from accelc import accelerate  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", nargs="?", default="resnet50")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    module = importlib.import_module(args.sample)
    model, inputs = module.get_model().eval(), tuple(module.get_inputs())
    frozen = torch.compile(module.get_model().eval())
    with inductor_config.patch(freezing=True), torch.no_grad():
        frozen(*inputs)  # Inductor reads its config when it compiles, at this first call
    fast = accelerate(model, inputs, backend="torch")
    with torch.no_grad():
        timings = compare_latency({"eager": model, "compile-freezing": frozen, "accelc-torch": fast}, [inputs],
                                  seconds=args.seconds)
    for name, t in timings.items():
        print(f"{name:18s} median {t.median_ms:8.2f} ms  min {t.min_ms:8.2f} ms  x{timings['eager'].median_ms / t.median_ms:.2f} eager  n={t.iterations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
