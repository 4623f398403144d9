"""merge_views: chains of view/reshape/unsqueeze/squeeze/flatten become one reshape."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import captured, count_ops, run_pass

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
