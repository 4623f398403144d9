"""remove_noops: eval dropout, identities, x*1 / x+0, redundant copies and casts disappear."""

import pytest
import torch
from torch import nn

from accelc.capture import capture
from accelc.patterns import is_op, size_hint
from pass_testing import (baked_sizes, capture_dynamic, captured, captured_dynamic, count_ops, fresh_size, inputs_at_shapes,
                          run_pass, run_pass_at_shapes, shape_env)

aten = torch.ops.aten


@pytest.mark.parametrize("sample", ["bert", "gpt2"])
def test_fires_on_samples(sample):
    model, inputs, gm = captured(sample)
    new, record, _ = run_pass("remove_noops", gm, inputs)
    assert record.status == "fired"
    assert count_ops(new, aten.dropout) == 0
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    _, again, _ = run_pass("remove_noops", new, inputs)
    assert again.status == "no change"


class _Identities(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("ones", torch.ones(4))
        self.register_buffer("zeros", torch.zeros(1, 4))

    def forward(self, x):
        y = torch.relu(x)
        y = (y * 1 + 0) / 1.0 - 0
        y = y * self.ones + self.zeros
        return y.contiguous().clone().to(torch.float32).detach()


def test_removes_arithmetic_identities_and_copies():
    model, inputs = _Identities().eval(), (torch.randn(3, 4),)
    new, record, _ = run_pass("remove_noops", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired"
    assert count_ops(new, aten.mul, aten.add, aten.div, aten.sub, aten.clone, aten.contiguous, aten.to) == 0
    assert count_ops(new, aten.relu) == 1
    x = torch.randn(3, 4)
    torch.testing.assert_close(new(x), model(x))


class _NotIdentities(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("ones", torch.ones(3, 4))

    def forward(self, x):
        a = x * 2 + 1                  # not neutral elements
        b = x * self.ones              # broadcasting changes the shape (4,) -> (3, 4)
        c = (x * 1).to(torch.float64)  # the cast changes the dtype
        d = x.clone()
        d.add_(1)                      # the copy is mutated: removing it would change x
        return a, b, c, d, x


def test_does_not_fire_on_real_work():
    model, inputs = _NotIdentities().eval(), (torch.randn(4),)
    gm = capture(model, inputs).graph_module
    new, record, _ = run_pass("remove_noops", gm, inputs)
    assert count_ops(new, aten.to, aten._to_copy) == 1
    assert count_ops(new, aten.clone) == 1
    assert count_ops(new, aten.mul) >= 2
    x = torch.randn(4)
    for got, want in zip(new(x), model(x)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("sample", ["bert", "gpt2"])
def test_symbolic_shapes(sample):
    # Sizes are compared as expressions: a hint-based ``==`` would install guards such as
    # Eq(s18, 2) and fail run_pass_at_shapes.
    model, inputs, gm = captured_dynamic(sample)
    new, record, _ = run_pass_at_shapes("remove_noops", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired", record.reason
    assert count_ops(new, aten.dropout) == 0
    assert not baked_sizes(gm, new)


class _BatchView(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], 4).relu()


def test_sizes_equal_only_in_the_example_are_not_the_same():
    inputs, gm = capture_dynamic(_BatchView(), (torch.randn(1, 4),))
    view = next(n for n in gm.graph.nodes if is_op(n, aten.view))
    x = view.args[0].meta["val"]
    with x.fake_mode:  # as if the view gave another batch, as large as x's in the example
        view.meta["val"] = torch.empty(fresh_size(gm, size_hint(x.shape[0]), "other_batch"), 4)
    guards = len(shape_env(gm).guards)
    new, record, _ = run_pass("remove_noops", gm, inputs)
    assert record.status == "no change" and count_ops(new, aten.view) == 1
    assert len(shape_env(gm).guards) == guards
