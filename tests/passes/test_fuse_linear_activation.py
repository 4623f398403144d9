"""fuse_linear_activation: linear/addmm + bias + ReLU/exact GELU become _addmm_activation."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def test_use_gelu_is_exact_erf_gelu_on_cpu():
    torch.manual_seed(0)
    x, w, b = torch.randn(8, 16), torch.randn(32, 16), torch.randn(32)
    fused = aten._addmm_activation(b, x, w.t(), use_gelu=True)
    torch.testing.assert_close(fused, nn.functional.gelu(nn.functional.linear(x, w, b)), rtol=0, atol=1e-6)


def test_fires_on_mlp_and_bert():
    for sample in ("mlp", "bert"):
        model, inputs, gm = captured(sample)
        new, record, _ = run_pass("fuse_linear_activation", gm, inputs)
        assert record.status == "fired" and record.stats["fused"] >= 1
        assert count_ops(new, aten._addmm_activation) == record.stats["fused"]
        with torch.no_grad():
            torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
        _, again, _ = run_pass("fuse_linear_activation", new, inputs)
        assert again.status == "no change"


class _NotFusable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4, bias=False), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        return (nn.functional.gelu(self.c(x), approximate="tanh"),  # not the exact GELU
                torch.relu(self.b(x)),                              # no bias
                torch.relu(h) + h)                                  # linear output has 2 users


def test_does_not_fire_on_tanh_gelu_biasless_or_shared():
    model, inputs = _NotFusable().eval(), (torch.randn(2, 3, 4),)
    new, record, _ = run_pass("fuse_linear_activation", capture(model, inputs).graph_module, inputs)
    assert record.status == "no change" and count_ops(new, aten._addmm_activation) == 0


def test_symbolic_batch_and_sequence():
    # The view back to [batch, seq, out] reads the sizes from x at run time (-1, sym_size).
    for sample in ("mlp", "bert"):
        model, inputs, gm = captured_dynamic(sample)
        new, record, ctx = run_pass_at_shapes("fuse_linear_activation", gm, model, inputs_at_shapes(sample, gm, inputs))
        assert record.status == "fired" and record.stats["fused"] == 2 and not ctx.refusals
        assert count_ops(new, aten._addmm_activation) == 2
        assert not baked_sizes(gm, new)
