"""quantize_conv_int8: convolutions to int8 with activation ranges from the user's calibration
inputs; without them it leaves the model alone and says how to give them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx_ir as ir
import pytest
import torch

import accelc
from accelc.cpu import cpu_has_int8_dot_products
from accelc.errors import UserInputError
from accelc.onnx.optimize import run_in_ort
from accelc.pass_base import PassContext
from accelc.registry import Registry
from accelc.verify import compare_outputs, flat_outputs, tolerance_for_precision

from onnx_samples import POINTS, captured, eager_outputs, exported, exported_dynamic, inputs_at, op_counts

REGISTRY = Registry.discover()
INT8 = tolerance_for_precision("int8")


def _calibration(inputs: tuple, count: int = 3) -> list[tuple]:
    """Input sets like the example: the same image statistics, other draws."""
    gen = torch.Generator().manual_seed(1)
    return [tuple(torch.randn(x.shape, generator=gen) * x.std() + x.mean() for x in inputs) for _ in range(count)]


def _apply(proto, inputs, calibration, precision="int8"):
    model = ir.serde.deserialize_model(proto)
    ctx = PassContext(precision=precision, current_pass="quantize_conv_int8", stage="onnx", example_inputs=inputs,
                      calibration_inputs=calibration)
    result = REGISTRY.create("onnx", "quantize_conv_int8")(model, ctx)
    return ir.serde.serialize_model(model), result, ctx


def _float_convs(proto) -> int:
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    return sum(1 for node in proto.graph.node if node.op_type == "Conv" and producers.get(node.input[1]) != "DequantizeLinear")


def test_fires_on_every_convolution_and_stays_within_int8_tolerance(export_root, tmp_path):
    _, inputs, gm = captured("cnn")
    proto = exported("cnn", export_root).model
    new, result, ctx = _apply(proto, inputs, _calibration(inputs))
    convs = op_counts(proto)["Conv"]
    assert result.modified and result.stats["quantised"] == result.stats["convolutions"] == convs >= 2, result
    assert result.stats["calibration_sets"] == 4  # the example and the three given
    assert result.stats["int8_region"] > convs  # the ReLUs and pooling between them stay uint8 too
    assert _float_convs(new) == 0 and op_counts(new)["QuantizeLinear"] >= convs
    assert op_counts(new).get("Gemm", 0) == op_counts(proto).get("Gemm", 0)  # MatMul/Gemm: quantize_int8's
    arg_names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    got = run_in_ort(new, inputs, arg_names)
    check = compare_outputs(got, eager_outputs("cnn", inputs), INT8)
    assert check.ok and check.max_abs_error > 0, check.message  # close, and really int8


def test_dynamic_sizes_are_served_at_every_point(export_root, tmp_path):
    """Calibrated at one image size, the ranges hold at others: the sizes stay symbolic."""
    _, inputs, gm = captured("cnn")
    new, result, _ = _apply(exported_dynamic("cnn", export_root).model, inputs, _calibration(inputs))
    assert result.modified
    arg_names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    for point in POINTS["cnn"]:
        x = inputs_at("cnn", point, seed=5)
        check = compare_outputs(run_in_ort(new, x, arg_names), eager_outputs("cnn", x), INT8)
        assert check.ok, (point, check.message)


def test_without_calibration_inputs_it_refuses_and_says_how(export_root):
    _, inputs, _ = captured("cnn")
    proto = exported("cnn", export_root).model
    new, result, ctx = _apply(proto, inputs, [])
    assert not result.modified and op_counts(new) == op_counts(proto)
    (refusal,) = [r for r in ctx.refusals if r.pass_name == "quantize_conv_int8"]
    assert "calibration" in refusal.reason and "stay fp32" in refusal.reason


def test_no_convolutions_no_change_idempotent_and_off_above_int8(export_root):
    _, inputs, _ = captured("mlp")
    mlp = exported("mlp", export_root).model
    new, result, ctx = _apply(mlp, inputs, _calibration(inputs))
    assert not result.modified and op_counts(new) == op_counts(mlp)
    assert [r.reason for r in ctx.refusals] == ["no float convolution to quantise: the calibration inputs are not used"]
    _, cnn_inputs, _ = captured("cnn")
    cnn = exported("cnn", export_root).model
    untouched, result, _ = _apply(cnn, cnn_inputs, _calibration(cnn_inputs), precision="fp32")
    assert not result.modified and op_counts(untouched) == op_counts(cnn)
    once, _, _ = _apply(cnn, cnn_inputs, _calibration(cnn_inputs))
    twice, result, _ = _apply(once, cnn_inputs, _calibration(cnn_inputs))
    assert not result.modified and op_counts(twice) == op_counts(once)


PLAIN_ORT = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
x = np.load(sys.argv[1] + "/x.npy")
np.save(sys.argv[1] + "/y.npy", s.run(None, {s.get_inputs()[0].name: x})[0])
print("accelc" in sys.modules)
"""

# accelc.load in a process that never imported the sample's model code: the artifact alone.
ACCELC_LOAD = """
import sys, numpy as np, torch, accelc
fast = accelc.load(sys.argv[1])
with torch.inference_mode():
    np.save(sys.argv[1] + "/y_loaded.npy", fast(torch.from_numpy(np.load(sys.argv[1] + "/x.npy"))).numpy())
print(fast.report["backend"], sorted(p["name"] for p in fast.report["onnx"]["onnx_passes"] if p["status"] == "fired"))
"""


def test_through_accelerate_at_other_batches_and_in_plain_ort(tmp_path):
    """accelerate(precision="int8", calibration=...): the convolutions and the classifier int8, the
    result within int8's bar at the example and at batch 3; the artifact, in fresh processes, in
    plain ORT (its model.onnx) and through accelc.load, at batch 2."""
    model, inputs, _ = captured("cnn")
    fast = accelc.accelerate(model, inputs, backend="onnxruntime", precision="int8", calibration=_calibration(inputs))
    passes = {p["name"]: p for p in fast.report["onnx"]["onnx_passes"]}
    assert passes["quantize_conv_int8"]["status"] == "fired", passes["quantize_conv_int8"]
    assert passes["quantize_int8"]["status"] == "fired"  # the classifier's Gemm, per call
    assert fast.report["backend"] == "onnxruntime" and fast.report["precision"] == "int8"
    for x in (inputs, inputs_at("cnn", (3, 32), seed=9)):
        with torch.inference_mode():
            check = compare_outputs(fast(*x), model(*x), INT8)
        assert check.ok, check.message
    folder = tmp_path / "artifact"
    fast.save(str(folder))
    x = inputs_at("cnn", (2, 32), seed=4)[0]
    np.save(folder / "x.npy", x.numpy())
    run = subprocess.run([sys.executable, "-c", PLAIN_ORT, str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]
    run = subprocess.run([sys.executable, "-c", ACCELC_LOAD, str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == "onnxruntime" and "quantize_conv_int8" in run.stdout, run.stdout
    with torch.inference_mode():
        for saved in ("y.npy", "y_loaded.npy"):
            assert compare_outputs([torch.from_numpy(np.load(folder / saved))], flat_outputs(model(x)), INT8).ok, saved
    if cpu_has_int8_dot_products():  # else accelc.load runs the fp32 graph instead, with a warning
        # the int8 model itself, as plain ORT runs it, not the fp32 graph beside it
        np.testing.assert_allclose(np.load(folder / "y_loaded.npy"), np.load(folder / "y.npy"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("calibration, precision, message", [
    ([torch.randn(1, 3, 32, 32)], "fp32", "--precision int8 or auto"),
    (torch.randn(1, 3, 32, 32), "int8", "non-empty list of input sets"),
    ([], "int8", "non-empty list of input sets"),
    ([(torch.randn(1, 3, 32, 32), torch.randn(1))], "int8", "calibration set 0 is"),
    ([torch.zeros(1, 3, 32, 32, dtype=torch.int64)], "int8", "same dtypes and ranks"),
    (["an image"], "int8", "calibration set 0"),
])
def test_bad_calibration_is_a_clear_error_before_any_work(calibration, precision, message, monkeypatch):
    import accelc.api

    model, inputs, _ = captured("cnn")
    monkeypatch.setattr(accelc.api, "capture_with_signature", lambda *a, **k: pytest.fail("captured before the check"))
    with pytest.raises(UserInputError, match=message):
        accelc.accelerate(model, inputs, backend="onnxruntime", precision=precision, calibration=calibration)


def test_a_calibration_set_the_graph_cannot_take_is_named(tmp_path):
    model, inputs, _ = captured("cnn")
    with pytest.raises(UserInputError, match="calibration set 1"):
        accelc.accelerate(model, inputs, backend="onnxruntime", precision="int8", static=True,
                          calibration=[inputs, (torch.randn(2, 3, 32, 32),)])


@pytest.mark.parametrize("bits, flags, falls_back", [(8, {"avx2"}, True), (7, {"avx2"}, False),
                                                     (8, {"avx2", "avx512_vnni"}, False)])
def test_full_range_int8_convolutions_are_not_run_where_they_saturate(bits, flags, falls_back, monkeypatch):
    """The artifact's int8 check counts the convolutions' weight bits too: 8-bit weights on an x86
    CPU without VNNI mean its fp32 graph runs instead (see accelc.artifact)."""
    import platform

    import accelc.cpu
    from accelc.artifact import _int8_saturates_here
    from accelc.errors import AccelcFallbackWarning

    monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    report = {"onnx": {"onnx_passes": [
        {"name": "quantize_conv_int8", "status": "fired", "stats": {"weight_bits": bits}},
        {"name": "quantize_int8", "status": "fired", "stats": {"weight_bits": 7}}]}}
    if falls_back:
        with pytest.warns(AccelcFallbackWarning, match="no VNNI"):
            assert _int8_saturates_here("artifact", report)
    else:
        assert not _int8_saturates_here("artifact", report)


def test_precision_auto_hands_the_calibration_to_its_int8_candidate(monkeypatch):
    from accelc_passes.onnx.quantize_conv_int8 import QuantizeConvInt8

    seen, run = [], QuantizeConvInt8.run

    def spy(self, model, ctx):
        seen.append((ctx.precision, len(ctx.calibration_inputs)))
        return run(self, model, ctx)

    monkeypatch.setattr(QuantizeConvInt8, "run", spy)
    model, inputs, _ = captured("cnn")
    fast = accelc.accelerate(model, inputs, precision="auto", calibration=_calibration(inputs, count=2))
    assert ("int8", 2) in seen, seen
    (int8,) = [c for c in fast.report["precision_candidates"] if c["precision"] == "int8"]
    assert int8["max_rel_error"] is not None


def test_the_int8_region_takes_a_residual_add_of_two_convolutions_but_not_one_with_an_outside_input():
    """int8_region: a node joins when every float input comes from the region or is a constant,
    so ResNet's residual Add (both branches convolutions) stays uint8, while an Add whose other
    input is computed outside (a transformer's residual stream, a skip from the graph input)
    stays fp32, and the nodes after it too."""
    from onnx import TensorProto, helper, numpy_helper

    from accelc_passes.onnx.quantize_conv_int8 import float_convolutions, int8_region

    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W"], ["c2"], name="conv2"),
             helper.make_node("Add", ["r1", "c2"], ["residual"], name="residual"),
             helper.make_node("Add", ["residual", "x"], ["skip"], name="skip"),
             helper.make_node("Relu", ["skip"], ["y"], name="after_skip")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = ir.serde.deserialize_model(helper.make_model(graph, ir_version=10,
                                                         opset_imports=[helper.make_opsetid("", 20)]))
    region = int8_region(model, float_convolutions(model))
    assert [n.name for n in region] == ["conv1", "relu1", "conv2", "residual"]
