"""A model held with its weights apart: the graph bytes refer to the weights, ONNX Runtime gets
them as arrays, and the two files written are what plain ONNX Runtime and ``onnx.load`` read."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelc.onnx.weights_apart import ALIGN, MIN_BYTES, weights_apart


def _model() -> onnx.ModelProto:
    """y = ((x @ W1) @ W2) + b: two weights big enough to go apart, one small bias that stays,
    one bf16 weight no array can hold (stays), and one initializer nothing reads (dropped)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 24)).astype(np.float32)
    bias = rng.standard_normal((24,)).astype(np.float32)  # 96 bytes: stays in the graph
    unused = rng.standard_normal((64, 64)).astype(np.float32)
    bf16 = helper.make_tensor("w_bf16", TensorProto.BFLOAT16, [32, 32], vals=[0] * 1024)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["z"]),
             helper.make_node("Add", ["z", "bias"], ["y"]), helper.make_node("Shape", ["w_bf16"], ["s"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (bias, "bias"), (unused, "unused"))]
        + [bf16])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _run(session, x):
    return session.run(None, {"x": x})


def test_the_graph_goes_without_its_large_weights_and_opens_with_them_handed_over():
    proto = _model()
    apart = weights_apart(proto)
    assert apart.names == ["w1", "w2"]  # in the graph's order; the bias, bf16 and the unused one are not apart
    assert [i.name for i in apart.proto.graph.initializer] == ["w1", "w2", "bias", "w_bf16"]  # "unused" dropped
    assert all(offset % ALIGN == 0 for offset in apart.offsets) and apart.offsets[1] >= apart.arrays[0].nbytes
    assert len(apart.graph_bytes) < sum(a.nbytes for a in apart.arrays)
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    plain = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    options = ort.SessionOptions()
    apart.add_to(options)
    opened = ort.InferenceSession(apart.graph_bytes, options, providers=["CPUExecutionProvider"])
    for want, got in zip(_run(plain, x), _run(opened, x)):
        np.testing.assert_array_equal(want, got)


def test_the_files_written_are_what_plain_onnx_runtime_and_onnx_load_read(tmp_path):
    proto = _model()
    path = str(tmp_path / "model.onnx")
    weights_apart(proto).write(path)
    assert (tmp_path / "model.onnx.data").exists()
    loaded = onnx.load(path)  # reads model.onnx.data beside it
    for init in proto.graph.initializer:
        if init.name != "unused":
            saved = next(i for i in loaded.graph.initializer if i.name == init.name)
            np.testing.assert_array_equal(numpy_helper.to_array(saved), numpy_helper.to_array(init))
    x = np.ones((2, 16), np.float32)
    plain = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    from_files = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for want, got in zip(_run(plain, x), _run(from_files, x)):
        np.testing.assert_array_equal(want, got)


def test_the_weights_are_the_models_own_and_the_model_is_left_as_it_was():
    """An ``ir.Model``'s weights are swapped out only while its graph is serialised: afterwards
    every initializer holds the very tensor it held, and the arrays handed over are views of them."""
    model = ir.serde.deserialize_model(_model())
    w1 = ir.tensor(np.arange(16 * 32, dtype=np.float32).reshape(16, 32), name="w1")
    model.graph.initializers["w1"].const_value = w1
    before = {name: value.const_value for name, value in model.graph.initializers.items()}
    apart = weights_apart(model)
    assert {name: value.const_value for name, value in model.graph.initializers.items()} == before
    assert np.shares_memory(apart.arrays[0], w1.numpy())


def test_a_model_with_no_large_weight_is_all_in_its_graph(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    small = numpy_helper.from_array(np.ones(2, np.float32), "c")
    assert small.ByteSize() < MIN_BYTES
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y], [small]),
                              opset_imports=[helper.make_opsetid("", 17)])
    apart = weights_apart(model)
    assert apart.names == [] and apart.proto.graph.initializer[0].raw_data
    apart.write(str(tmp_path / "model.onnx"))
    assert not (tmp_path / "model.onnx.data").exists()


def test_the_graph_must_be_written_as_model_onnx(tmp_path):
    """The graph's references name model.onnx.data: written under another name it would point
    at a file that is not there."""
    with pytest.raises(ValueError, match="model.onnx"):
        weights_apart(_model()).write(str(tmp_path / "other.onnx"))


def test_the_export_holds_the_graph_modules_weights_and_nothing_copies_them(tmp_path):
    """The dynamo export's weights are the graph module's own memory as read-only arrays, and the
    model handed to ONNX Runtime keeps them so: no copy of a weight is made before the session's
    own (GPT-2's 500 MB were serialised, then copied back out, by each reader)."""
    import torch

    from accelc.onnx.export import export_graph

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).eval()
    x = torch.randn(2, 32)
    gm = torch.export.export(model, (x,)).module()
    export = export_graph(gm, (x,), str(tmp_path))
    addresses = {t.data_ptr() for t in gm.state_dict().values()}
    large = [v.const_value.numpy() for v in export.ir_model.graph.initializers.values()
             if v.const_value is not None and v.const_value.nbytes >= MIN_BYTES]
    assert len(large) == 2
    for array in large:
        assert not array.flags.writeable
        assert array.__array_interface__["data"][0] in addresses
    apart = weights_apart(export.ir_model)
    assert {a.__array_interface__["data"][0] for a in apart.arrays} <= addresses
    options = ort.SessionOptions()
    apart.add_to(options)
    session = ort.InferenceSession(apart.graph_bytes, options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    # the whole protobuf, for a caller that wants one, holds the same weights
    proto = export.model
    assert {i.name for i in proto.graph.initializer} == set(export.ir_model.graph.initializers)
