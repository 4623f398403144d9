"""OpenVINO's route from accelc's ONNX export, step by step, on GPT-2 (or ``--model``): writing the
export's files, OpenVINO's ONNX frontend reading them (the weights mapped from model.onnx.data),
saving that model as IR, and compiling it either way: from the saved IR or from the model read.

    python benchmarks/probe_openvino_read.py --rounds 2

Each step alone (nothing else runs beside it), ``--rounds`` times; prints one line per round with
the CPU flags. It is why a build compiles the model read and writes no IR (accelc/onnx/to_openvino.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import openvino as ov

    from accelc.onnx.build import export_for_runtimes
    from accelc.onnx.weights_apart import weights_apart
    from accelc.runtime.openvino import compile_config, shared_core

    module = load_sample(args.model)
    model, inputs = sample_model(module, small=False), sample_inputs(module, small=False, batch=1)
    fast = accelc.accelerate(model, inputs, backend="torch")
    exported = export_for_runtimes(fast.graph_module, inputs, fast.signature.dynamic_shapes())
    core = shared_core()
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.model}")
    for round_ in range(args.rounds):
        folder = tempfile.mkdtemp(prefix="accelc-probe-")
        try:
            t0 = time.perf_counter()
            weights_apart(exported.ir_model).write(os.path.join(folder, "model.onnx"))
            t1 = time.perf_counter()
            read = core.read_model(os.path.join(folder, "model.onnx"))
            t2 = time.perf_counter()
            ov.save_model(read, os.path.join(folder, "model.xml"), compress_to_fp16=False)
            t3 = time.perf_counter()
            from_ir = core.compile_model(os.path.join(folder, "model.xml"), "CPU", compile_config("fp32", args.threads))
            t4 = time.perf_counter()
            from_read = core.compile_model(read, "CPU", compile_config("fp32", args.threads))
            t5 = time.perf_counter()
            print(f"round {round_}: write ONNX {t1 - t0:.2f} s, read {t2 - t1:.2f} s, save IR {t3 - t2:.2f} s, "
                  f"compile the IR {t4 - t3:.2f} s, compile the model read {t5 - t4:.2f} s", flush=True)
            del from_ir, from_read, read
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
