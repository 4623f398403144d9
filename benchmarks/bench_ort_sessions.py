"""Session-to-session spread: several ORT sessions on one plain export, and accelc's, timed together.

    python benchmarks/bench_ort_sessions.py --samples resnet50,cnn,mlp --sessions 3 --seconds 40

A check on bench_onnxruntime.py's A/A column. For samples whose accelc graph is the plain export's
graph (the convnets and the MLP have nothing ORT does not already fuse), every system here runs
the same kernels, so any gap between them is the measurement, not the model. Rounds are shuffled
and each system's turn starts after a short idle pause and one untimed call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "samples"))
sys.path.insert(0, HERE)

import accelc  # noqa: E402
from bench_onnxruntime import export_plain, ort_callable, write_results  # noqa: E402


def bench_one(sample: str, sessions: int, seconds: float, workdir: str) -> dict:
    module = importlib.import_module(sample)
    model = module.get_model().eval()
    inputs = tuple(module.get_inputs())
    names = list(model.forward.__code__.co_varnames[1:1 + len(inputs)])
    path = os.path.join(workdir, f"{sample}.onnx")
    export_plain(model, inputs, path, True, names)
    systems = {f"ort_plain_{i}": ort_callable(path, names) for i in range(sessions)}
    systems["accelc_ort"] = accelc.accelerate(model, inputs, backend="onnxruntime")
    one = time.perf_counter()
    systems["ort_plain_0"](*inputs)
    reps = max(1, int(0.05 / max(time.perf_counter() - one, 1e-6)))
    samples: dict[str, list[float]] = {k: [] for k in systems}
    order = list(systems)
    rng = random.Random(0)
    deadline = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < deadline:
            rng.shuffle(order)
            for key in order:
                time.sleep(0.02)  # let the previous system's worker threads stop spinning
                systems[key](*inputs)
                start = time.perf_counter()
                for _ in range(reps):
                    systems[key](*inputs)
                samples[key].append((time.perf_counter() - start) / reps * 1e3)
    medians = {k: round(float(np.median(v)), 4) for k, v in samples.items()}
    plain = [medians[k] for k in medians if k.startswith("ort_plain")]
    return {"sample": sample, "median_ms": medians, "rounds": len(samples["accelc_ort"]),
            "plain_spread": round(max(plain) / min(plain), 3),
            "accelc_vs_plain_median": round(float(np.median(plain)) / medians["accelc_ort"], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="resnet50,cnn,mlp")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for sample in args.samples.split(","):
            rows.append(bench_one(sample, args.sessions, args.seconds, workdir))
            print(json.dumps(rows[-1]), flush=True)
    write_results(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
