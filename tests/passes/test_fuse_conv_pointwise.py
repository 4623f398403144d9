"""fuse_conv_pointwise: conv2d (+ReLU, +residual add) to oneDNN prepacked convolutions on CPU."""

import pytest
import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten
mkldnn = torch.ops.mkldnn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")


@pytest.mark.parametrize("sample, convs", [("resnet50", 17), ("cnn", 5)])
def test_fires_after_bn_folding(sample, convs):
    model, inputs, gm = captured(sample)
    folded, _, _ = run_pass("fold_conv_bn", gm, inputs)
    new, record, _ = run_pass("fuse_conv_pointwise", folded, inputs)
    assert record.status == "fired" and record.stats["fused"] == convs
    assert count_ops(new, aten.conv2d) == 0 and count_ops(new, aten.relu, aten.relu_) == 0
    if sample == "resnet50":  # the residual add + ReLU of every bottleneck is in the conv
        assert count_ops(new, mkldnn._convolution_pointwise.binary) == 4
        assert count_ops(new, aten.add, aten.add_) == 0
    x = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = new(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    assert out.is_contiguous()
    _, again, _ = run_pass("fuse_conv_pointwise", new, inputs)
    assert again.status == "no change"


def test_does_not_fire_on_conv1d_or_float64():
    for model, inputs in ((nn.Conv1d(3, 4, 3), (torch.randn(1, 3, 8),)),
                          (nn.Conv2d(3, 4, 3).double(), (torch.randn(1, 3, 8, 8, dtype=torch.float64),))):
        new, record, _ = run_pass("fuse_conv_pointwise", capture(model.eval(), inputs).graph_module, inputs)
        assert record.status == "no change"


class _ConvAct(nn.Module):
    def __init__(self, act: nn.Module, residual: bool):
        super().__init__()
        self.conv, self.act, self.residual = nn.Conv2d(4, 4, 3, padding=1, groups=2), act, residual

    def forward(self, x):
        y = self.conv(x)
        return self.act(y + x) if self.residual else self.act(y)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish()], ids=lambda a: type(a).__name__)
def test_unary_epilogues_match_eager(act):
    torch.manual_seed(0)
    model, inputs = _ConvAct(act, residual=False).eval(), (torch.randn(1, 4, 9, 9),)
    new, record, _ = run_pass("fuse_conv_pointwise", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired" and record.stats["epilogues"] == 1
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


def test_residual_without_relu():
    torch.manual_seed(0)
    model, inputs = _ConvAct(nn.Identity(), residual=True).eval(), (torch.randn(1, 4, 9, 9),)
    new, record, _ = run_pass("fuse_conv_pointwise", capture(model, inputs).graph_module, inputs)
    assert record.status == "fired" and count_ops(new, mkldnn._convolution_pointwise.binary) == 1
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


def test_fires_after_to_channels_last():
    model, inputs, gm = captured("resnet50")
    gm, _, _ = run_pass("fold_conv_bn", gm, inputs)
    gm, _, _ = run_pass("to_channels_last", gm, inputs)
    new, record, _ = run_pass("fuse_conv_pointwise", gm, inputs)
    assert record.status == "fired" and record.stats["fused"] == 17
    with torch.no_grad():
        torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sample, convs, binary", [("resnet50", 17, 4), ("cnn", 5, 0)])
def test_symbolic_batch_and_image_size(sample, convs, binary):
    # Weights are prepacked for the example's sizes; oneDNN reorders them where another input
    # size wants another layout, so every batch and image size gets eager's answers.
    model, inputs, gm = captured_dynamic(sample)
    input_sets = inputs_at_shapes(sample, gm, inputs)
    folded, _, _ = run_pass_at_shapes("fold_conv_bn", gm, model, input_sets)
    new, record, ctx = run_pass_at_shapes("fuse_conv_pointwise", folded, model, input_sets)
    assert record.status == "fired" and record.stats["fused"] == convs and not ctx.refusals
    assert count_ops(new, aten.conv2d) == 0 and count_ops(new, aten.relu, aten.relu_) == 0
    assert count_ops(new, mkldnn._convolution_pointwise.binary) == binary
    assert not baked_sizes(gm, new)
    with torch.no_grad():
        assert new(*input_sets[-1]).is_contiguous()


def test_weights_are_packed_for_the_users_example(monkeypatch):
    # Capture grows the batch of 1 to 2; a weight packed for batch 2 is right at batch 1 too but
    # oneDNN reorders it on every call there (ResNet-50 ran 1.8x slower), so pack for the example.
    import accelc_passes.fx.fuse_conv_pointwise as module

    sizes = []

    class Spy:
        def __getattr__(self, name):
            return getattr(torch.ops.mkldnn, name)

        def _reorder_convolution_weight(self, *args):
            sizes.append(tuple(args[-1]))
            return torch.ops.mkldnn._reorder_convolution_weight(*args)

    monkeypatch.setattr(module, "mkldnn", Spy())
    model, inputs, gm = captured_dynamic("resnet50")
    _, record, _ = run_pass("fuse_conv_pointwise", gm, inputs)
    assert record.status == "fired" and len(sizes) == 17
    assert sizes[0] == tuple(inputs[0].shape) == (1, 3, 64, 64) and all(s[0] == 1 for s in sizes)
