"""What one call of accelc's OpenVINO runtime costs, against OpenVINO's own ways to run the same model.

    python benchmarks/bench_openvino_calls.py --models mlp,resnet50 --batches 1

Builds ``backend="openvino"`` and times, interleaved in one process: eager; the accelerated module
(the signature guard, then the runtime); the runtime alone; ``InferRequest.infer(inputs)``
(OpenVINO's high-level call, which wraps its results in a dict); the request's own tensors
(``set_input_tensor``, ``infer()``, ``get_output_tensor``: what the runtime does); and the same on
a copy of the model reshaped to the example's static sizes (what dynamic sizes cost in
OpenVINO). Prints one markdown table with the CPU flags.
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
from accelc.runtime.openvino import compile_config, shared_core  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402


def request_call(request, outputs: int):
    """A call through the request's tensors (inputs shared, outputs copied)."""
    import openvino as ov

    def call(*args):
        for i, x in enumerate(args):
            request.set_input_tensor(i, ov.Tensor(x.numpy(), shared_memory=True))
        request.infer()
        return [request.get_output_tensor(k).data.copy() for k in range(outputs)]
    return call


def systems(model, inputs, threads: int) -> dict:
    import openvino as ov

    fast = accelc.accelerate(model, inputs, backend="openvino")
    runtime = fast.runner
    static = runtime.ov_model.clone()  # the model the build compiled, pinned to the example's sizes
    static.reshape({port.get_any_name(): ov.PartialShape(list(x.shape)) for port, x in zip(static.inputs, inputs)})
    static = shared_core().compile_model(static, "CPU", compile_config("fp32", threads))
    dynamic_request = runtime.compiled.create_infer_request()
    outputs = len(runtime.compiled.outputs)
    return {
        "eager": model,
        "accelc (guard + runtime)": fast,
        "runtime alone": runtime,
        "InferRequest.infer(inputs)": lambda *a: dynamic_request.infer([x.numpy() for x in a], share_inputs=True,
                                                                        share_outputs=False),
        "request tensors": request_call(runtime.compiled.create_infer_request(), outputs),
        "request tensors, static sizes": request_call(static.create_infer_request(), outputs),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resnet50")
    parser.add_argument("--batches", default="1")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        module = load_sample(name)
        model = sample_model(module, small=False)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = sample_inputs(module, small=False, batch=batch)
            with torch.inference_mode():
                timings = compare_latency(systems(model, inputs, args.threads), [inputs], seconds=args.seconds)
            rows.append((name, batch, {k: t.median_ms for k, t in timings.items()}))
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.seconds:g} s interleaved per row; median ms\n")
    names = list(rows[0][2])
    print("| sample | batch | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name, batch, ms in rows:
        print(f"| {name} | {batch} | " + " | ".join(f"{ms[k]:.4g}" for k in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
