"""to_channels_last: conv-heavy graphs run their conv2d in channels-last memory format."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def test_fires_on_resnet50():
    model, inputs, gm = captured("resnet50")
    new, record, _ = run_pass("to_channels_last", gm, inputs)
    assert record.status == "fired" and record.stats["converted"] == 17
    assert count_ops(new, aten.conv2d) == 17
    x = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = new(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    _, again, _ = run_pass("to_channels_last", new, inputs)
    assert again.status == "no change"


def test_does_not_fire_on_a_single_conv():
    model, inputs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), (torch.randn(1, 3, 8, 8),)
    _, record, _ = run_pass("to_channels_last", capture(model, inputs).graph_module, inputs)
    assert record.status == "no change"


def test_symbolic_batch_and_image_size():
    model, inputs, gm = captured_dynamic("resnet50")
    new, record, _ = run_pass_at_shapes("to_channels_last", gm, model, inputs_at_shapes("resnet50", gm, inputs))
    assert record.status == "fired" and record.stats["converted"] == 17
    assert not baked_sizes(gm, new)
