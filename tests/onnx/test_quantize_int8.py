"""quantize_int8's rewrite on a hand-written graph: which layers it takes, the bias it absorbs, and
the arithmetic of the op it writes, checked against the docstring's formula computed in numpy."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc.cpu
from accelc.pass_base import PassContext
from accelc.registry import Registry

REGISTRY = Registry.discover()
K, N = 16, 8


def _layers_model() -> onnx.ModelProto:
    """x (B, S, K), batch and sequence symbolic, through every kind of layer the pass meets:

        a = MatMul(x, W1) + b1            taken, the Add absorbed as the op's bias
        c = Gemm(flat(x), W2ᵀ, b2, transB)  taken, C as the bias; flat(x) read by it alone
        d = Gemm(flat(x), W1, alpha=0.5)  left: scaled
        e = MatMul(x, x_ᵀ)                left: no constant weight
        f = MatMul(x, W1)                 taken, W1 shared with a: quantised once; so is x
    """
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(K, N)).astype(np.float32)
    w2t = rng.normal(size=(N, K)).astype(np.float32)
    b1 = rng.normal(size=(N,)).astype(np.float32)
    b2 = rng.normal(size=(N,)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2t, "W2t"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(b2, "b2"), numpy_helper.from_array(np.array([-1, K], np.int64), "flat_shape")]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a_mm"], name="a_matmul"),
        helper.make_node("Add", ["a_mm", "b1"], ["a"], name="a_bias"),
        helper.make_node("Reshape", ["x", "flat_shape"], ["x2"], name="flatten"),
        helper.make_node("Gemm", ["x2", "W2t", "b2"], ["c"], name="c_gemm", transB=1),
        helper.make_node("Gemm", ["x2", "W1"], ["d"], name="d_gemm", alpha=0.5),
        helper.make_node("Transpose", ["x"], ["xt"], name="xt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["e"], name="e_matmul"),
        helper.make_node("MatMul", ["x", "W1"], ["f"], name="f_matmul"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "acdef"]
    graph = helper.make_graph(nodes, "layers", [x], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _quantised(proto: onnx.ModelProto, precision: str = "int8"):
    model = ir.serde.deserialize_model(proto)
    ctx = PassContext(precision=precision, current_pass="quantize_int8", stage="onnx")
    result = REGISTRY.create("onnx", "quantize_int8")(model, ctx)
    return ir.serde.serialize_model(model), result, ctx


def _run(proto: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


def _by_output(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in proto.graph.node for out in node.output}


def test_takes_constant_weights_absorbs_biases_and_leaves_the_rest():
    proto = _layers_model()
    new, result, _ = _quantised(proto)
    assert result.modified and result.stats["candidates"] == result.stats["quantised"] == 3, result
    producers = _by_output(new)
    assert producers["c"].op_type == "DynamicQuantizeMatMul" and len(producers["c"].input) == 5  # C, the op's bias
    assert producers["a"].op_type == producers["f"].op_type == "MatMulIntegerToFloat"
    assert all(producers[name].domain == "com.microsoft" for name in "acf")
    assert len(producers["a"].input) == 7 and len(producers["f"].input) == 5  # a's bias in the op; f has none
    (quantise_x,) = [node for node in new.graph.node if node.op_type == "DynamicQuantizeLinear"]
    assert quantise_x.input == ["x"] and producers["a"].input[0] == producers["f"].input[0] == quantise_x.output[0]
    assert producers["d"].op_type == "Gemm" and producers["e"].op_type == "MatMul"
    assert not any(node.op_type == "Add" for node in new.graph.node)
    int8 = [t for t in new.graph.initializer if t.data_type == TensorProto.INT8]
    assert len(int8) == 2  # W1 once for a and f, W2 once


@pytest.mark.parametrize("batch, seq", [(1, 3), (2, 5), (4, 1)])
def test_the_op_computes_the_documented_formula_at_every_size(batch, seq):
    """Both forms compute s_x·s_W·Σ_k (x_q − z_x)·W_q + b: recomputed here from the written
    initializers and x's uint8 quantisation, at sizes other than any example."""
    from accelc_passes.onnx.int8_sensitivity import quantise_activation

    proto = _layers_model()
    new, _, _ = _quantised(proto)
    x = np.random.default_rng(batch * 10 + seq).normal(size=(batch, seq, K)).astype(np.float32)
    got, exact = _run(new, x), _run(proto, x)
    inits = {t.name: numpy_helper.to_array(t) for t in new.graph.initializer}
    producers = _by_output(new)
    for name in "acf":
        node = producers[name]
        scale_at, bias_at = (2, 4) if node.op_type == "DynamicQuantizeMatMul" else (3, 6)
        w = inits[node.input[1]].astype(np.float32) * inits[node.input[scale_at]]
        bias = inits[node.input[bias_at]] if len(node.input) > bias_at else 0.0
        rows = quantise_activation(x.reshape(-1, K) if name == "c" else x)
        np.testing.assert_allclose(got[name], (rows @ w + bias).reshape(got[name].shape), rtol=1e-4, atol=1e-4)
        scale = np.abs(exact[name]).max()
        assert np.abs(got[name] - exact[name]).max() / scale < 0.05  # int8: close, not exact
        assert np.abs(got[name] - exact[name]).max() > 0
    for name in "de":
        np.testing.assert_array_equal(got[name], exact[name])


@pytest.mark.parametrize("flags, qmax", [({"avx512_vnni"}, 127), ({"avx2"}, 64)])
def test_weights_span_the_range_the_cpu_can_sum(flags, qmax, monkeypatch):
    import platform

    monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    new, result, _ = _quantised(_layers_model())
    assert result.stats["weight_bits"] == (8 if qmax == 127 else 7)
    for t in new.graph.initializer:
        if t.data_type == TensorProto.INT8:
            w = numpy_helper.to_array(t).astype(np.int32)
            assert np.abs(w).max(axis=0).tolist() == [qmax] * w.shape[1]  # every column's largest weight at ±qmax


def test_idempotent_and_off_above_int8():
    proto = _layers_model()
    untouched, result, _ = _quantised(proto, precision="fp32")
    assert not result.modified and [n.op_type for n in untouched.graph.node] == [n.op_type for n in proto.graph.node]
    once, _, _ = _quantised(proto)
    twice, result, ctx = _quantised(once)
    assert not result.modified and [n.op_type for n in twice.graph.node] == [n.op_type for n in once.graph.node]
    assert any("no MatMul or Gemm" in r.reason for r in ctx.refusals)


def test_a_layer_whose_output_has_no_recorded_type_serialises():
    """After a pass that drops the recorded shapes (quantize_conv_int8 reloads its quantiser's
    model; a contrib op's output cannot be typed), the op written keeps the output untyped."""
    w = numpy_helper.from_array(np.random.default_rng(1).normal(size=(K, N)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="layer"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "untyped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    assert ir.serde.deserialize_model(proto).graph.node(0).outputs[0].type is None
    new, result, _ = _quantised(proto)
    assert result.stats["quantised"] == 1
    x = np.random.default_rng(2).normal(size=(3, K)).astype(np.float32)
    got, exact = _run(new, x)["y"], _run(proto, x)["y"]
    assert np.abs(got - exact).max() / np.abs(exact).max() < 0.05
