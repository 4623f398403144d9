"""Static int8 (activations calibrated on given inputs) for convolutional models: ONNX Runtime's
``quantize_static`` on a sample's plain dynamo export (QDQ, per-channel int8 weights, uint8
activations, MinMax calibration on the example and three seeded variants, every op type), and
accelc's route (``precision="int8"`` with those calibration inputs, image sizes pinned, batch
dynamic: convolutions by quantize_conv_int8, the classifier per call), against the export in
fp32 and OpenVINO at its default precision, timed interleaved in one process (same threads), with
each one's relative error against eager fp32 (max |out − eager| / max |eager|) on an input the
calibration did not see.

    python benchmarks/probe_static_int8.py --models resnet50,cnn,multibranch_cnn

Prints the CPU flags, ONNX Runtime's and OpenVINO's versions and one JSON line per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402


def first_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def probe(name: str, threads: int, seconds: float) -> dict:
    import onnxruntime as ort
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from accelc.timing import compare_latency
    from accelc.verify import random_inputs_like

    module = load_sample(name)
    model, inputs = sample_model(module, small=False).eval(), sample_inputs(module, small=False, batch=1)
    calibration = [inputs] + [random_inputs_like(inputs, seed=s) for s in (1, 2, 3)]
    row = {"sample": name}
    unseen = random_inputs_like(inputs, seed=11)
    with tempfile.TemporaryDirectory() as work:
        fp32, prepared, int8 = (os.path.join(work, f) for f in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(torch.onnx.export(model, inputs, dynamo=True, opset_version=20, optimize=True).model_proto, fp32)
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        names = [i.name for i in onnx.load(prepared, load_external_data=False).graph.input]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.sets = iter(calibration)

            def get_next(self):
                batch = next(self.sets, None)
                return None if batch is None else {n: x.numpy() for n, x in zip(names, batch)}

        quantize_static(prepared, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions = {label: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                    for label, path in (("ort fp32", fp32), ("ort static int8", int8))}
        systems = {label: (lambda s: lambda *xs: s.run(None, {n: x.numpy() for n, x in zip(names, xs)}))(s)
                   for label, s in sessions.items()}
        compiled = ov.Core().compile_model(ov.convert_model(model, example_input=inputs), "CPU",
                                           {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                            "PERFORMANCE_HINT": "LATENCY"})
        systems["openvino default"] = lambda *xs: list(compiled([x.numpy() for x in xs]).values())
        import accelc

        fast = accelc.accelerate(model, inputs, backend="onnxruntime", precision="int8", calibration=calibration[1:],
                                 dynamic={"height": False, "width": False})
        row["accelc_passes"] = {p["name"]: p["status"] for p in fast.report["onnx"]["onnx_passes"]
                                if p["name"].startswith("quantize")}
        systems["accelc int8 calibrated"] = lambda *xs: [first_tensor(fast(*xs)).numpy()]
        with torch.inference_mode():
            expected = model(*unseen)
        expected = first_tensor(expected)
        row["errors"] = {}
        for label, call in systems.items():
            got = np.asarray(call(*unseen)[0])
            row["errors"][label] = float(np.abs(got - expected.numpy()).max() / np.abs(expected.numpy()).max())
        timings = compare_latency(systems, [inputs, unseen], seconds=seconds)
        row["median_ms"] = {label: round(t.median_ms, 3) for label, t in timings.items()}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,cnn,multibranch_cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    import onnxruntime
    import openvino

    torch.set_num_threads(args.threads)
    print(json.dumps({"cpu_flags": cpu_flags(), "onnxruntime": onnxruntime.__version__,
                      "openvino": openvino.__version__, "threads": args.threads}))
    for name in args.models.split(","):
        print(json.dumps(probe(name, args.threads, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
