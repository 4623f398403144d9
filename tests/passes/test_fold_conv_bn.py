"""fold_conv_bn: conv (1d/2d/3d, grouped, transposed) + eval BatchNorm folds into the conv."""

import pytest
import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten
BN = (aten.batch_norm, aten._native_batch_norm_legit_no_training)


def _randomize_bn(bn: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g))
        bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(0.5 * torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=g))


def _check_against_eager(model, gm, inputs, seeds=(1, 2)):
    for seed in seeds:
        x = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sample, folds", [("cnn", 5), ("resnet50", 17)])
def test_fires_on_samples(sample, folds):
    model, inputs, gm = captured(sample)
    new, record, _ = run_pass("fold_conv_bn", gm, inputs)
    assert record.status == "fired" and record.stats["folded"] == folds
    assert count_ops(new, *BN) == 0
    _check_against_eager(model, new, inputs)
    _, again, _ = run_pass("fold_conv_bn", new, inputs)
    assert again.status == "no change"


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("groups, bias", [(1, True), (2, False)])
def test_transposed_conv(dim, groups, bias):
    torch.manual_seed(0)
    conv = getattr(nn, f"ConvTranspose{dim}d")(4, 6, 3, stride=2, groups=groups, bias=bias)
    bn = getattr(nn, f"BatchNorm{dim}d")(6)
    _randomize_bn(bn, dim)
    model = nn.Sequential(conv, bn).eval()
    inputs = (torch.randn(1, 4, *[5] * dim),)
    new, record, _ = run_pass("fold_conv_bn", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired" and count_ops(new, *BN) == 0
    _check_against_eager(model, new, inputs)


class _TwoUsers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # the conv output is needed unnormalised too


def test_does_not_fire_when_conv_output_has_two_users():
    model = _TwoUsers().eval()
    inputs = (torch.randn(1, 3, 8, 8),)
    gm = capture(model, inputs).graph_module
    new, record, ctx = run_pass("fold_conv_bn", gm, inputs)
    assert record.status == "no change" and count_ops(new, *BN) == 1
    assert any("2 users" in r.reason for r in ctx.refusals)


@pytest.mark.parametrize("sample, folds", [("cnn", 5), ("resnet50", 17)])
def test_symbolic_shapes(sample, folds):
    # Only weights change: the fold holds at every batch and image size.
    model, inputs, gm = captured_dynamic(sample)
    new, record, _ = run_pass_at_shapes("fold_conv_bn", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired" and record.stats["folded"] == folds
    assert count_ops(new, *BN) == 0 and not baked_sizes(gm, new)
