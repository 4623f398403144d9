"""pack_linear_weights: fp32 linear/addmm with constant weights run as MKL GEMMs on packed weights."""

import pytest
import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten
pytestmark = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="needs a torch build with MKL")


@pytest.mark.parametrize("sample, op", [("bert", aten.linear), ("gpt2", aten.addmm), ("mlp", aten.linear)])
def test_fires_on_transformer_linears_and_gpt2_conv1d(sample, op):
    model, inputs, gm = captured(sample)
    before = count_ops(gm, op)
    new, record, _ = run_pass("pack_linear_weights", gm, inputs)
    assert record.status == "fired" and record.stats["packed"] >= before > 0
    assert count_ops(new, op) == 0 and count_ops(new, torch.ops.mkl._mkl_linear) == record.stats["packed"]
    with torch.inference_mode():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
        # The packing size is a hint: another batch size gives the same answers.
        bigger = tuple(torch.cat([x, x]) for x in inputs)
        if sample == "mlp":
            torch.testing.assert_close(new(*bigger), model(*bigger), rtol=1e-4, atol=1e-5)
    _, again, _ = run_pass("pack_linear_weights", new, inputs)
    assert again.status == "no change"


class _NotPackable(nn.Module):
    def forward(self, x, w):
        return nn.functional.linear(x, w)  # the weight is an input, not a constant


def test_leaves_non_constant_weights_alone():
    inputs = (torch.randn(4, 8), torch.randn(3, 8))
    gm = capture(_NotPackable(), inputs).graph_module
    _, record, ctx = run_pass("pack_linear_weights", gm, inputs)
    assert record.status == "no change"
    assert any("not a constant" in r.reason for r in ctx.refusals)


def test_does_nothing_below_fp32():
    model, inputs, gm = captured("mlp")
    _, record, _ = run_pass("pack_linear_weights", gm, inputs, precision="bf16")
    assert record.status == "no change"


def test_packing_size_is_only_a_hint():
    torch.manual_seed(0)
    w, b = torch.randn(96, 64), torch.randn(96)
    packed = torch.ops.mkl._mkl_reorder_linear_weight(w, 16)
    for rows in (1, 7, 16, 48, 512):
        x = torch.randn(rows, 64)
        torch.testing.assert_close(torch.ops.mkl._mkl_linear(x, packed, w, b, 16), nn.functional.linear(x, w, b),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sample, op, packed", [("bert", aten.linear, 13), ("gpt2", aten.addmm, 9), ("mlp", aten.linear, 4)])
def test_symbolic_batch_and_sequence(sample, op, packed):
    # Packed for the example's rows (batch x sequence), verified at 1 to 512 rows.
    model, inputs, gm = captured_dynamic(sample)
    new, record, ctx = run_pass_at_shapes("pack_linear_weights", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired" and record.stats["packed"] == packed and not ctx.refusals
    assert count_ops(new, op) == 0 and count_ops(new, torch.ops.mkl._mkl_linear) == packed
    assert not baked_sizes(gm, new)
    # Packed for the rows of the user's example (batch 1 x 16 tokens), not of the capture's (2 x 16).
    rows = {n.args[4] for n in new.graph.nodes if n.target is torch.ops.mkl._mkl_linear.default}
    assert rows == {"bert": {16, 1}, "gpt2": {16}, "mlp": {1}}[sample]
