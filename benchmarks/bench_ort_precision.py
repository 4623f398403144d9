"""Reduced precision on ONNX Runtime's CPU provider: speed and error side by side, one run.

    python benchmarks/bench_ort_precision.py --json benchmarks/results/ort-precision-cpu.json

For each sample, accelc's ORT model (fp32, the CPU pipeline) is the starting point and two
other precisions are timed against it and against eager, in interleaved rounds:

- fp16: the same float16 conversion accelc's ``convert_fp16`` pass applies on CUDA (fp32 I/O,
  normalisations kept fp32), forced onto the CPU provider to show why accelc refuses it there;
- int8: ``accelc.accelerate(..., precision="int8")``, whose ``quantize_int8`` pass is ONNX
  Runtime's dynamic quantisation (int8 weights per output channel, activations quantised per
  call), which targets the CPU's integer dot-product instructions (VNNI).

bf16 is not measured: the CPU provider has bf16 kernels for almost no operator.
Errors are the max absolute difference from eager, and that divided by the largest |output|.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile

import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "samples"))
sys.path.insert(0, HERE)

import accelc  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402
from accelc.verify import flat_outputs  # noqa: E402
from bench_onnxruntime import make_inputs, ort_callable, write_results  # noqa: E402


def to_fp16(src: str, dst: str) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from accelc_passes.onnx.convert_fp16 import KEEP_FP32 as keep

    model = convert_float_to_float16(onnx.load(src), keep_io_types=True, op_block_list=keep, disable_shape_infer=True)
    onnx.save(model, dst)


def errors(got: list, expected: list) -> tuple[float, float]:
    worst, scale = 0.0, 0.0
    for g, e in zip(got, expected):
        if e.is_floating_point():
            worst = max(worst, float((g.float() - e.float()).abs().max()))
            scale = max(scale, float(e.float().abs().max()))
    return worst, (worst / scale if scale else 0.0)


def bench_one(sample: str, batch: int, seq: int | None, seconds: float, workdir: str) -> dict:
    module = importlib.import_module(sample)
    model = module.get_model(small=False).eval()
    inputs = make_inputs(sample, module, False, batch, seq)
    with torch.inference_mode():
        expected = flat_outputs(model(*inputs))
    fast = accelc.accelerate(model, inputs, backend="onnxruntime")
    if fast.report.get("backend") != "onnxruntime":
        raise RuntimeError(f"accelc did not build its ONNX Runtime backend for {sample}")
    runner = fast.runner
    fp32 = os.path.join(workdir, f"{sample}_fp32.onnx")
    onnx.save(onnx.load(runner.model_file()), fp32)
    systems = {"eager": model, "ort_fp32": ort_callable(fp32, runner.meta["arg_names"], accelc_fusions=True)}
    notes: dict[str, str] = {}
    path = os.path.join(workdir, f"{sample}_fp16.onnx")
    try:
        to_fp16(fp32, path)
        systems["ort_fp16"] = ort_callable(path, runner.meta["arg_names"], accelc_fusions=True)
    except Exception as exc:  # the converter or ORT refusing the model: record it, keep going
        notes["ort_fp16"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    int8 = accelc.accelerate(model, inputs, backend="onnxruntime", precision="int8")
    quantised = next((p for p in int8.report.get("onnx", {}).get("onnx_passes", []) if p["name"] == "quantize_int8"), {})
    notes["int8_pass"] = f"{quantised.get('status')}: {quantised.get('stats')}"
    if int8.report.get("backend") == "onnxruntime":
        systems["ort_int8"] = int8
    else:
        notes["ort_int8"] = int8.report.get("backend_fallback", "accelc did not build its int8 ORT model")
    err = {}
    for name, fn in systems.items():
        with torch.inference_mode():
            err[name] = errors(flat_outputs(fn(*inputs)), expected)
    timings = compare_latency(systems, [inputs], seconds=seconds)
    fp32_ms = timings["ort_fp32"].median_ms
    return {
        "sample": sample, "batch": batch, "seq": seq,
        "median_ms": {k: round(t.median_ms, 3) for k, t in timings.items()},
        "speedup_vs_ort_fp32": {k: round(fp32_ms / t.median_ms, 3) for k, t in timings.items()},
        "max_abs_error": {k: float(f"{v[0]:.3g}") for k, v in err.items()},
        "relative_error": {k: float(f"{v[1]:.3g}") for k, v in err.items()},
        "notes": notes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="bert,gpt2,vit,resnet50")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128, help="sequence length for bert and gpt2")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for sample in args.samples.split(","):
            row = bench_one(sample, args.batch, args.seq if sample in ("bert", "gpt2") else None, args.seconds, workdir)
            rows.append(row)
            print(json.dumps(row), flush=True)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    write_results(args.json, rows, cpu_vnni="avx512_vnni" in flags or "avx_vnni" in flags, cpu_fp16="avx512_fp16" in flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
