"""cancel_transposes: inverse transposes cancel, permute chains compose."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten
PERMUTES = (aten.transpose, aten.permute, aten.t)


def test_fires_on_bert():
    model, inputs, gm = captured("bert")
    before = count_ops(gm, *PERMUTES)
    new, record, _ = run_pass("cancel_transposes", gm, inputs)
    assert record.status == "fired" and count_ops(new, *PERMUTES) < before
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    _, again, _ = run_pass("cancel_transposes", new, inputs)
    assert again.status == "no change"


class _Chains(nn.Module):
    def forward(self, x):
        a = x.transpose(1, 2).transpose(2, 1)        # cancels
        b = x.permute(2, 0, 1).permute(1, 2, 0)      # composes to the identity
        c = x.permute(1, 0, 2).transpose(0, 2)       # composes to one permute
        return torch.relu(a) + torch.relu(b), torch.relu(c)


def test_cancels_and_composes():
    model, inputs = _Chains(), (torch.randn(2, 3, 4),)
    new, record, _ = run_pass("cancel_transposes", capture(model, inputs).graph_module, inputs)
    assert record.stats == {"cancelled": 2, "composed": 1}
    assert count_ops(new, *PERMUTES) == 1
    x = torch.randn(2, 3, 4)
    for got, want in zip(new(x), model(x)):
        torch.testing.assert_close(got, want)


class _Shared(nn.Module):
    def forward(self, x):
        t = x.transpose(0, 1)
        return t.relu(), t.permute(1, 0).sum()  # t is used on its own: keep both


def test_does_not_fire_on_single_or_shared_transposes():
    model, inputs = _Shared(), (torch.randn(3, 4),)
    gm = capture(model, inputs).graph_module
    new, record, _ = run_pass("cancel_transposes", gm, inputs)
    # The permute cancels against t (identity) but t itself stays for its other user.
    assert count_ops(new, *PERMUTES) == 1
    _, again, _ = run_pass("cancel_transposes", new, inputs)
    assert again.status == "no change"
    single = capture(nn.Sequential(nn.Flatten(0)), (torch.randn(3, 4),)).graph_module
    _, record, _ = run_pass("cancel_transposes", single, (torch.randn(3, 4),))
    assert record.status == "no change"


def test_symbolic_shapes_bert():
    # Permutations read only ranks: the same rewrite at every batch and sequence length.
    model, inputs, gm = captured_dynamic("bert")
    new, record, _ = run_pass_at_shapes("cancel_transposes", gm, model, inputs_at_shapes("bert", gm, inputs))
    assert record.status == "fired" and record.stats == {"cancelled": 0, "composed": 2}
    assert not baked_sizes(gm, new)
