"""fold_constants: subgraphs of weights, buffers and literals become precomputed tensors."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import captured, count_ops, run_pass

aten = torch.ops.aten


def test_fires_on_bert_masks_and_position_ids():
    model, inputs, gm = captured("bert")
    arange_before = count_ops(gm, aten.arange)
    new, record, _ = run_pass("fold_constants", gm, inputs)
    assert record.status == "fired" and record.stats["folded"] > 0
    assert count_ops(new, aten.arange) < arange_before
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    _, again, _ = run_pass("fold_constants", new, inputs)
    assert again.status == "no change"


class _WeightTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, x):
        return x @ (self.w.t() * 2 + torch.arange(4.0))


def test_folds_weight_transpose():
    torch.manual_seed(0)
    model, inputs = _WeightTranspose().eval(), (torch.randn(3, 6),)
    new, record, _ = run_pass("fold_constants", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired" and record.stats["folded"] == 1
    assert count_ops(new, aten.t, aten.mul, aten.add, aten.arange) == 0
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x))


class _BigExpand(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("row", torch.randn(1, 1024))

    def forward(self, x):
        return x + self.row.expand(1024, 1024)  # folding would store 4 MiB from 4 KiB


class _MutatedConstant(nn.Module):
    def forward(self, x):
        acc = torch.zeros(3, 4)
        acc.add_(x)  # a folded buffer would keep the sum across calls
        return acc


def test_does_not_fire_when_too_large_or_mutated():
    for model, inputs in ((_BigExpand(), (torch.randn(1024, 1024),)), (_MutatedConstant(), (torch.randn(3, 4),))):
        gm = capture(model.eval(), inputs).graph_module
        new, record, ctx = run_pass("fold_constants", gm, inputs)
        assert record.status == "no change", record
        assert ctx.refusals


def test_does_not_fire_on_mlp():
    _, inputs, gm = captured("mlp")
    _, record, _ = run_pass("fold_constants", gm, inputs)
    assert record.status == "no change"
