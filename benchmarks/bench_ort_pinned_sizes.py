"""What pinning ONNX Runtime's free sizes buys: one model.onnx, three sessions, timed together.

    python benchmarks/bench_ort_pinned_sizes.py resnet50 8 --seconds 60
    python benchmarks/bench_ort_pinned_sizes.py bert 8

Builds the sample with accelc twice (the default dynamic export and ``dynamic=False``), then
opens plain CPU sessions with accelc's options: the dynamic model as it is, the dynamic model
with every named size pinned to the example's (``add_free_dimension_override_by_name``, what
accelc's CPU runtime does), and the static model. Turns of ~0.3 s each, interleaved, with a
short pause between turns so one session's spinning threads do not slow the next. Prints each
median and static/that (1.0: as fast as the static model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import onnxruntime as ort
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402
from accelc.onnx.session import disabled_fusions, session_options  # noqa: E402


def open_cpu_session(path: str, threads: int, pinned: dict | None = None):
    return ort.InferenceSession(path, session_options(threads, pinned), providers=["CPUExecutionProvider"],
                                disabled_optimizers=disabled_fusions("CPUExecutionProvider"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("batch", type=int)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    module = load_sample(args.model)
    model, inputs = sample_model(module, small=False), sample_inputs(module, small=False, batch=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for kind, dynamic in (("dynamic", None), ("static", False)):
            fast = accelc.accelerate(model, inputs, backend="onnxruntime", dynamic=dynamic, measure=False)
            fast.save(os.path.join(tmp, kind))
            paths[kind] = os.path.join(tmp, kind, "model.onnx")
        dynamic = open_cpu_session(paths["dynamic"], args.threads)
        pinned = {dim: size for i, x in zip(dynamic.get_inputs(), inputs)
                  for dim, size in zip(i.shape, x.shape) if isinstance(dim, str)}
        sessions = {"dynamic": dynamic, "dynamic, sizes pinned": open_cpu_session(paths["dynamic"], args.threads, pinned),
                    "static": open_cpu_session(paths["static"], args.threads)}
        feeds = {k: {i.name: x.numpy() for i, x in zip(s.get_inputs(), inputs)} for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for k, s in sessions.items():
            s.run(None, feeds[k])
        end = time.time() + args.seconds
        while time.time() < end:
            for k, s in sessions.items():
                turn = time.perf_counter()
                while time.perf_counter() - turn < 0.3:
                    start = time.perf_counter()
                    s.run(None, feeds[k])
                    times[k].append(time.perf_counter() - start)
                time.sleep(0.03)
    static = statistics.median(times["static"])
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.model} batch {args.batch}; pinned {pinned}")
    for k, v in times.items():
        median = statistics.median(v)
        print(f"{k:<24} {median * 1e3:9.3f} ms  n={len(v):<5} static/this {static / median:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
