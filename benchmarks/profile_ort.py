"""Where an ORT CPU call spends its time, per operator type: the plain export vs accelc's model.

    python benchmarks/profile_ort.py gpt2 --batch 1 --seq 512

Both models run with ORT's profiler on the same inputs (bench_onnxruntime.make_inputs); the
kernel time of every node is summed by operator type and averaged per call. accelc's session is
opened as accelc opens it (its disabled ORT fusions included). Per-op sums are stable where
whole-model medians on a shared machine are not, so this is the tool for "which kernels
changed", not for the speed-up itself.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "samples"))
sys.path.insert(0, HERE)

import accelc  # noqa: E402
from accelc.onnx.session import disabled_fusions, session_options  # noqa: E402
from bench_onnxruntime import export_plain, make_inputs  # noqa: E402


CONTROL_FLOW = ("If", "Loop", "Scan")


def profile(path: str, inputs: tuple, prefix: str, accelc_fusions: bool, calls: int) -> tuple[float, dict]:
    """(median ms per call, {op type: (ms per call, nodes per call)})."""
    options = session_options()
    options.enable_profiling, options.profile_file_prefix = True, prefix
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled_fusions("CPUExecutionProvider") if accelc_fusions else None)
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    warmup = 3
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    total, count = collections.Counter(), collections.Counter()
    for event in events:  # every run, warm-up included, is in the trace
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"]
            count[event["args"]["op_name"]] += 1
    runs = warmup + calls
    return float(np.median(times)) * 1e3, {op: (us / runs / 1e3, count[op] // runs) for op, us in total.most_common()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=None, help="sequence length (bert, gpt2)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    module = importlib.import_module(args.sample)
    model = module.get_model().eval()
    inputs = make_inputs(args.sample, module, False, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as workdir:
        plain = os.path.join(workdir, "plain.onnx")
        export_plain(model, inputs, plain, True, None)
        artifact = accelc.accelerate(model, inputs, backend="onnxruntime").save(os.path.join(workdir, "accelc"))
        for name, path, fusions in (("plain export", plain, False), ("accelc", os.path.join(artifact, "model.onnx"), True)):
            median, ops = profile(path, inputs, os.path.join(workdir, name.split()[0]), fusions, args.calls)
            # An If's (Loop's, Scan's) time includes its subgraph's nodes, which the trace also
            # lists on their own: the total counts them once.
            kernels = sum(ms for op, (ms, _) in ops.items() if op not in CONTROL_FLOW)
            print(f"== {name}: median {median:.2f} ms per call, kernels {kernels:.2f} ms")
            for op, (ms, nodes) in list(ops.items())[:args.top]:
                print(f"  {op:28s} {ms:9.2f} ms  x{nodes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
