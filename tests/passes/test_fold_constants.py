"""fold_constants: subgraphs of weights, buffers and literals become precomputed tensors."""

import torch
from torch import nn

from accelc.capture import capture
from accelc.patterns import find_nodes
from pass_testing import (baked_sizes, capture_dynamic, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass,
                          run_pass_at_shapes)

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


def _sized_aranges(gm):
    """arange calls whose length is a symbolic size (a node), not a literal."""
    return [n for n in find_nodes(gm, aten.arange) if isinstance(n.args[0], torch.fx.Node)]


def test_symbolic_shapes_bert():
    model, inputs, gm = captured_dynamic("bert")
    new, record, ctx = run_pass_at_shapes("fold_constants", gm, model, inputs_at_shapes("bert", gm, inputs))
    assert record.status == "fired" and record.stats["folded"] >= 2
    assert count_ops(new, aten.new_ones) == 0  # reads only its input's dtype and device
    assert len(_sized_aranges(new)) == len(_sized_aranges(gm)) > 0  # position ids follow the sequence
    assert not baked_sizes(gm, new)


class _FullLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("b", torch.randn(4))

    def forward(self, x):
        return x + torch.full_like(x, 2.0) * self.b.exp()


def test_does_not_fold_a_read_of_a_symbolic_shape():
    model = _FullLike().eval()
    inputs, gm = capture_dynamic(model, (torch.randn(1, 4),))
    new, record, ctx = run_pass_at_shapes("fold_constants", gm, model, inputs_at_shapes("full_like", gm, inputs))
    assert record.status == "fired" and count_ops(new, aten.exp) == 0  # the weight-only part folds
    assert count_ops(new, aten.full_like) == 1
    assert [r.reason for r in ctx.refusals] == ["reads the symbolic shape of x"]
