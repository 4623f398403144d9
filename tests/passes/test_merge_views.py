"""merge_views: chains of view/reshape/unsqueeze/squeeze/flatten become one reshape."""

import pytest
import torch
from torch import nn

from accelc.capture import capture
from pass_testing import (baked_sizes, capture_dynamic, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass,
                          run_pass_at_shapes)

aten = torch.ops.aten
VIEWS = (aten.view, aten.reshape, aten._unsafe_view, aten.unsqueeze, aten.squeeze, aten.flatten)


def test_fires_on_gpt2():
    model, inputs, gm = captured("gpt2")
    before = count_ops(gm, *VIEWS)
    new, record, _ = run_pass("merge_views", gm, inputs)
    assert record.status == "fired" and count_ops(new, *VIEWS) < before
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    _, again, _ = run_pass("merge_views", new, inputs)
    assert again.status == "no change"


class _Chain(nn.Module):
    def forward(self, x):
        y = x.flatten(1).unsqueeze(0).view(2, 3, 4).squeeze(0)
        z = x.view(6, 4).view(2, 3, 4)               # back to x's shape: no reshape at all
        return y.relu(), z + 1


def test_collapses_chain():
    model, inputs = _Chain(), (torch.randn(2, 3, 4),)
    new, record, _ = run_pass("merge_views", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired"
    assert count_ops(new, *VIEWS) <= 1
    x = torch.randn(2, 3, 4)
    for got, want in zip(new(x), model(x)):
        torch.testing.assert_close(got, want)


class _Shared(nn.Module):
    def forward(self, x):
        y = x.view(6, 4)
        return y.view(24), y.relu()  # y has two users: its shape is seen on its own


def test_does_not_fire_through_shared_links():
    model, inputs = _Shared(), (torch.randn(2, 3, 4),)
    new, record, _ = run_pass("merge_views", capture(model, inputs).graph_module, inputs)
    assert record.status == "no change"


@pytest.mark.parametrize("sample, merged", [("bert", 8), ("gpt2", 9)])
def test_symbolic_shapes(sample, merged):
    # The mask/position-id unsqueeze chains ([s, 1, 1, 1], [1, 1, s]) become one reshape with -1.
    model, inputs, gm = captured_dynamic(sample)
    new, record, ctx = run_pass_at_shapes("merge_views", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired" and record.stats["merged"] == merged
    assert not ctx.refusals and not baked_sizes(gm, new)


class _DynamicChains(nn.Module):
    def forward(self, x, mask):
        m = mask.float()                                                # [B, S]
        one = x.view(x.shape[0], 6, 4).unsqueeze(0)                     # [1, B, 6, 4]: one symbolic size
        named = m.unsqueeze(1).view(m.shape[0], m.shape[1], 1)          # [B, S, 1]: the view names both
        unnamed = m.unsqueeze(-1).unsqueeze(0)                          # [1, B, S, 1]: nothing names them
        return one.relu(), named + 1, unnamed * 2


def test_symbolic_chains():
    model = _DynamicChains()
    inputs, gm = capture_dynamic(model, (torch.randn(1, 24), torch.ones(1, 5, dtype=torch.int64)))
    new, record, ctx = run_pass_at_shapes("merge_views", gm, model, inputs_at_shapes("chains", gm, inputs))
    assert record.status == "fired" and record.stats["merged"] == 2
    reshapes = {n.args[0].name: n.args[1] for n in new.graph.nodes if n.target is aten.reshape.default}
    assert reshapes["x"] == [1, -1, 6, 4]
    assert [a.target for a in reshapes["to"][:2]] == [aten.sym_size.int] * 2 and reshapes["to"][2] == 1
    assert len(ctx.refusals) == 1 and "2 symbolic sizes" in ctx.refusals[0].reason
    assert not baked_sizes(gm, new)
