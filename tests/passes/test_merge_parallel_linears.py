"""merge_parallel_linears: linears reading one input become one wide linear plus a split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelc.capture import capture
from accelc.verify import compare_outputs, verification_inputs
from pass_testing import baked_sizes, captured, captured_dynamic, count_ops, inputs_at_shapes, run_pass, run_pass_at_shapes

aten = torch.ops.aten


def _assert_matches_eager(model, gm, inputs):
    with torch.inference_mode():
        for x in verification_inputs(inputs, count=2, seed=3):
            cmp = compare_outputs(gm(*x), model(*x))
            assert cmp.ok, cmp.message


@pytest.mark.parametrize("sample", ["bert", "vit"])
def test_merges_query_key_value(sample):
    model, inputs, gm = captured(sample)
    linears = count_ops(gm, aten.linear)
    new_gm, record, _ = run_pass("merge_parallel_linears", gm, inputs)
    assert record.status == "fired", record.reason
    assert record.stats == {"merged": 2, "linears": 6}  # Q/K/V of each of the 2 layers
    assert count_ops(new_gm, aten.linear) == linears - 4
    assert count_ops(new_gm, aten.split_with_sizes) == 2
    _assert_matches_eager(model, new_gm, inputs)

    _, record2, _ = run_pass("merge_parallel_linears", new_gm, inputs)  # idempotent
    assert record2.status == "no change" and record2.stats == {"merged": 0, "linears": 0}


def test_gpt2_already_fused_projection_is_left_alone():
    _, inputs, gm = captured("gpt2")
    _, record, _ = run_pass("merge_parallel_linears", gm, inputs)
    assert record.status == "no change"


class _GatedMLP(nn.Module):
    """LLaMA-style gate/up projections, one with a bias and one without."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(8, 16, bias=False)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


def test_merges_gate_and_up_with_mixed_biases():
    torch.manual_seed(0)
    model, inputs = _GatedMLP().eval(), (torch.randn(2, 5, 8),)
    gm = capture(model, inputs).graph_module
    new_gm, record, _ = run_pass("merge_parallel_linears", gm, inputs)
    assert record.stats == {"merged": 1, "linears": 2}
    assert count_ops(new_gm, aten.linear) == 2
    _assert_matches_eager(model, new_gm, inputs)


class _DifferentInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class _WeightAsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x, w):
        return self.a(x) + torch.nn.functional.linear(x, w)


@pytest.mark.parametrize("module, inputs, refused", [
    (_DifferentInputs(), (torch.randn(3, 8), torch.randn(3, 8)), False),
    (_WeightAsInput(), (torch.randn(3, 8), torch.randn(8, 8)), True),
], ids=["different-inputs", "weight-not-constant"])
def test_must_not_fire(module, inputs, refused):
    gm = capture(module.eval(), inputs).graph_module
    new_gm, record, ctx = run_pass("merge_parallel_linears", gm, inputs)
    assert record.status == "no change" and count_ops(new_gm, aten.linear) == 2
    assert bool(ctx.refusals) == refused


@pytest.mark.parametrize("sample", ["bert", "vit"])
def test_symbolic_shapes(sample):
    # Weights decide the split sizes; the batch and sequence stay symbolic.
    model, inputs, gm = captured_dynamic(sample)
    new_gm, record, _ = run_pass_at_shapes("merge_parallel_linears", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired" and record.stats == {"merged": 2, "linears": 6}
    assert not baked_sizes(gm, new_gm)
