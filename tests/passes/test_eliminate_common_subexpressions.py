"""CSE: merges duplicate pure calls, never random or mutating ones; idempotent; same numbers."""

import torch

from accelc.capture import capture
from accelc.patterns import aten
from pass_testing import baked_sizes, captured_dynamic, inputs_at_shapes, run_pass_at_shapes


class Duplicated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        a = torch.relu(self.lin(x))
        b = torch.relu(self.lin(x))
        return a * b + torch.sigmoid(x) + torch.sigmoid(x)


class Randomised(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x) + torch.rand_like(x)


def test_fires_on_duplicates_and_is_idempotent(run_pass, count_ops):
    model, x = Duplicated().eval(), torch.randn(4, 8)
    gm = capture(model, (x,)).graph_module
    new_gm, record, _ = run_pass("eliminate_common_subexpressions", gm, (x,))
    assert record.status == "fired" and record.stats["merged"] == 3
    assert count_ops(new_gm, aten.linear) == 1 and count_ops(new_gm, aten.sigmoid) == 1
    for seed in range(3):
        torch.manual_seed(seed)
        y = torch.randn(4, 8)
        torch.testing.assert_close(new_gm(y), model(y))
    _, again, _ = run_pass("eliminate_common_subexpressions", new_gm, (x,))
    assert again.status == "no change"


def test_random_ops_are_never_merged(count_ops):
    from accelc import PassContext
    from accelc.registry import resolve

    x = torch.randn(3)
    gm = capture(Randomised(), (x,)).graph_module
    before = count_ops(gm, aten.rand_like)
    # verification is off: random outputs cannot be compared, the structure is what matters here
    result = resolve(["eliminate_common_subexpressions"])[0](gm, PassContext(example_inputs=(x,)))
    assert not result.modified and count_ops(gm, aten.rand_like) == before == 2


def test_fires_on_a_real_capture(captured, run_pass):
    model, inputs, gm = captured("bert")
    new_gm, record, _ = run_pass("eliminate_common_subexpressions", gm, inputs)
    assert record.status in ("fired", "no change") and record.reason is None


def test_symbolic_shapes_gpt2(count_ops):
    # Duplicate sym_size reads and shape-built masks merge like any pure call.
    model, inputs, gm = captured_dynamic("gpt2")
    input_sets = inputs_at_shapes("gpt2", gm, inputs)
    new_gm, record, _ = run_pass_at_shapes("eliminate_common_subexpressions", gm, model, input_sets)
    assert record.status == "fired" and record.stats["merged"] > 0
    assert not baked_sizes(gm, new_gm)
