"""lower_precision: bf16/fp16 compute with sensitive ops in fp32, outputs within the lowered tolerance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import accelc
from accelc.pass_base import PassContext
from accelc.pass_manager import PassManager
from accelc.verify import Verifier, compare_outputs, tolerance, verification_inputs
from accelc_passes.fx.lower_precision import LowerPrecision
from pass_testing import baked_sizes, captured, captured_dynamic, inputs_at_shapes, load_sample, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def _lowered(model, inputs, precision):
    fast = accelc.accelerate(model, inputs, backend="torch", precision=precision, passes=["lower_precision"])
    assert fast.report["fallback"] is None, fast.report["fallback"]
    (record,) = fast.report["passes"]
    return fast, record


def _dtype_of(node):
    return node.meta["val"].dtype


def test_does_nothing_at_fp32():
    _, inputs, gm = captured("bert")
    _, record, _ = run_pass("lower_precision", gm, inputs, precision="fp32")
    assert record.status == "no change"


@pytest.mark.parametrize("sample", ["bert", "gpt2"])
def test_bf16_lowers_gemms_keeps_sensitive_ops_in_fp32(sample):
    model, inputs = load_sample(sample)
    fast, record = _lowered(model, inputs, "bf16")
    assert record["status"] == "fired", record["reason"]
    gm = fast.graph_module
    linears = [n for n in gm.graph.nodes if n.target in (aten.linear.default, aten.addmm.default)]
    assert linears and all(_dtype_of(n) == torch.bfloat16 for n in linears)
    sensitive = [n for n in gm.graph.nodes if n.target in (aten.layer_norm.default, aten.softmax.int)]
    assert sensitive and all(_dtype_of(n.args[0]) == torch.float32 for n in sensitive)
    with torch.inference_mode():  # outputs keep fp32 and stay within bf16 tolerance of eager
        for x in verification_inputs(inputs, count=2, seed=5):
            got, want = fast(*x), model(*x)
            got, want = (got if isinstance(got, tuple) else (got,)), (want if isinstance(want, tuple) else (want,))
            assert [g.dtype for g in got] == [w.dtype for w in want]
            cmp = compare_outputs(got, want, lambda d: tolerance(torch.bfloat16))
            assert cmp.ok, cmp.message
    errors = gm.meta["accelc"]["lower_precision"]["outputs"]
    assert errors and all(e["ok"] for e in errors)


def test_fp16_mlp_and_cast_pairs_cancel():
    model, inputs = load_sample("mlp")
    fast, record = _lowered(model, inputs, "fp16")
    assert record["status"] == "fired"
    gm = fast.graph_module
    for node in gm.graph.nodes:  # no cast of a cast that merely round-trips
        if node.target is aten._to_copy.default and getattr(node.args[0], "target", None) is aten._to_copy.default:
            assert _dtype_of(node.args[0].args[0]) != _dtype_of(node)


def test_idempotent():
    model, inputs, gm = captured("mlp")
    manager = PassManager([LowerPrecision()], verify=True)
    verifier = Verifier.for_module(model, inputs)
    verifier.tolerance_of = lambda d: tolerance(torch.bfloat16)  # as accelerate() does for bf16
    ctx = PassContext(precision="bf16", example_inputs=inputs)
    once, (record,) = manager.run(gm, ctx, verifier)
    assert record.status == "fired", record.reason
    _, (record2,) = manager.run(once, ctx, verifier)
    assert record2.status == "no change"


class _Cancelling(nn.Module):
    """blocks.1 subtracts two nearly equal large projections: hopeless in bf16, fine in fp32."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 2, bias=False), nn.Linear(2, 4)])
        with torch.no_grad():
            w = torch.randn(1, 16) * 300
            self.blocks[1].weight.copy_(torch.cat([w, -w + 1e-2 * torch.randn(1, 16)]))

    def forward(self, x):
        h = self.blocks[0](x)
        d = self.blocks[1](h)
        return self.blocks[2]((d[..., :1] + d[..., 1:]).expand(-1, 2))


def test_keeps_the_layer_that_breaks_tolerance_in_fp32():
    torch.manual_seed(0)
    model, inputs = _Cancelling().eval(), (torch.randn(4, 16),)
    fast, record = _lowered(model, inputs, "bf16")
    meta = fast.graph_module.meta["accelc"]["lower_precision"]
    assert "blocks.1" in meta["fp32_layers"]
    assert record["stats"]["fp32_layers"] >= 1
    assert any("kept layer blocks.1 in fp32" in r["reason"] for r in fast.report["refusals"])
    assert all(e["ok"] for e in meta["outputs"])
    assert fast.report["verification"]["ok"]


@pytest.mark.parametrize("sample", ["cnn", "bert"])
def test_symbolic_shapes_bf16(sample):
    # The casts' fake strides are worked out without guards (a CNN's pooled sizes may be 1).
    model, inputs, gm = captured_dynamic(sample)
    new, record, _ = run_pass_at_shapes("lower_precision", gm, model, inputs_at_shapes(sample, gm, inputs), precision="bf16")
    assert record.status == "fired", record.reason
    assert not baked_sizes(gm, new)
