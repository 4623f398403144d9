"""bind_direct_calls: ATen OpOverload calls become torch's generated bindings, same outputs."""

import torch
from torch import nn

from accelc.capture import capture
from accelc.runtime.torch import TorchRuntime, flat_callable
from accelc_passes.fx.bind_direct_calls import DIRECT_BINDINGS
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def test_rebinds_mlp_and_bert_ops():
    for sample in ("mlp", "bert"):
        model, inputs, gm = captured(sample)
        listed = sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in DIRECT_BINDINGS)
        new, record, _ = run_pass("bind_direct_calls", gm, inputs)
        assert record.status == "fired" and record.stats["rebound"] == listed > 0
        assert count_ops(new, aten.linear) == 0
        with torch.inference_mode():
            torch.testing.assert_close(new(*inputs), gm(*inputs), rtol=0, atol=0)  # the same kernels
        _, again, _ = run_pass("bind_direct_calls", new, inputs)
        assert again.status == "no change"


class _Unlisted(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1).flip(0)  # ops with no entry in DIRECT_BINDINGS


def test_leaves_unlisted_ops_alone():
    inputs = (torch.randn(3, 4),)
    gm = capture(_Unlisted(), inputs).graph_module
    _, record, _ = run_pass("bind_direct_calls", gm, inputs)
    assert record.status == "no change"


def test_every_binding_is_the_same_named_op():
    # A typo in the table (relu -> sigmoid) would still run; the names must agree.
    for op, binding in DIRECT_BINDINGS.items():
        assert op._schema.name.split("::")[1] == binding.__name__, (op, binding)


def test_torch_runtime_runs_a_flat_function_with_eager_outputs():
    model, inputs, gm = captured("mlp")
    runtime = TorchRuntime(gm, torch.device("cpu"), inputs)
    assert runtime._call is not runtime.lowered  # the flat function passed its check
    with torch.inference_mode():
        torch.testing.assert_close(runtime(*inputs), model(*inputs), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(runtime(*[x * 2 for x in inputs]), model(*[x * 2 for x in inputs]), rtol=1e-5, atol=1e-6)
    runtime.to("cpu")  # moving tensors (even in place) drops the flat function bound to the old ones
    assert runtime._call is runtime.lowered


def test_flat_callable_keeps_nested_outputs():
    class TwoOut(nn.Module):
        def forward(self, x):
            return {"a": x + 1, "b": (x * 2, x - 1)}

    inputs = (torch.randn(2, 3),)
    gm = capture(TwoOut(), inputs).graph_module  # returns its leaves flat; the structure is kept as data
    fast = flat_callable(gm)
    got, want = fast(*inputs), gm(*inputs)
    assert isinstance(got, tuple) and len(got) == 3
    torch.testing.assert_close(got, want)
    packed = gm.meta["accelc_outputs"].packer()(got)
    assert packed.keys() == {"a", "b"} and isinstance(packed["b"], tuple)
    torch.testing.assert_close(packed, TwoOut()(*inputs))


def test_symbolic_shapes_bert():
    model, inputs, gm = captured_dynamic("bert")
    new, record, _ = run_pass_at_shapes("bind_direct_calls", gm, model, inputs_at_shapes("bert", gm, inputs))
    assert record.status == "fired" and record.stats["rebound"] > 0
    assert count_ops(new, aten.linear) == 0 and not baked_sizes(gm, new)
