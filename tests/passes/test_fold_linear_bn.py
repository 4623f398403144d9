"""fold_linear_bn: Linear + eval BatchNorm1d on a 2-D activation folds into the linear."""

import torch
from torch import nn

from accelc.capture import capture
from pass_testing import baked_sizes, capture_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def _model(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.weight.normal_(1, 0.3)
        bn.bias.normal_(0, 0.3)
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    return nn.Sequential(nn.Linear(5, 6, bias=bias), bn, nn.ReLU()).eval()


def test_fires_numerics_and_idempotent():
    for bias in (True, False):
        model = _model(bias)
        inputs = (torch.randn(3, 5),)
        new, record, _ = run_pass("fold_linear_bn", capture(model, inputs).graph_module, inputs)
        assert record.status == "fired" and record.stats["folded"] == 1
        assert count_ops(new, aten.batch_norm) == 0 and count_ops(new, aten.linear) == 1
        x = torch.randn(3, 5)
        with torch.no_grad():
            torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-5)
        _, again, _ = run_pass("fold_linear_bn", new, inputs)
        assert again.status == "no change"


class _SequenceBN(nn.Module):
    """BatchNorm1d over [N, C, L] after a linear on [N, C, L]: normalises dim 1, not the features."""

    def __init__(self):
        super().__init__()
        self.linear, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.linear(x))


def test_does_not_fire_on_3d_activation():
    model = _SequenceBN().eval()
    inputs = (torch.randn(2, 3, 4),)
    new, record, ctx = run_pass("fold_linear_bn", capture(model, inputs).graph_module, inputs)
    assert record.status == "no change" and count_ops(new, aten.batch_norm) == 1
    assert any("not 2-D" in r.reason for r in ctx.refusals)


def test_symbolic_batch():
    model = _model(bias=True)
    inputs, gm = capture_dynamic(model, (torch.randn(3, 5),))
    new, record, _ = run_pass_at_shapes("fold_linear_bn", gm, model, inputs_at_shapes("linear_bn", gm, inputs))
    assert record.status == "fired" and record.stats["folded"] == 1
    assert count_ops(new, aten.batch_norm) == 0 and not baked_sizes(gm, new)
