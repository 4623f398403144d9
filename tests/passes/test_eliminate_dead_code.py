"""DCE: unused pure nodes and constants go; side effects and outputs stay."""

import torch

from accelc.capture import capture
from accelc.patterns import aten
from pass_testing import baked_sizes, captured_dynamic, inputs_at_shapes, run_pass_at_shapes


class Wasteful(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(4, 4)
        self.unused = torch.nn.Linear(4, 4)

    def forward(self, x):
        _ = self.unused(x).relu()
        return self.used(x)


class Clean(torch.nn.Module):
    def forward(self, x):
        return x.relu() + 1


def test_fires_and_is_idempotent(run_pass, count_ops):
    model, x = Wasteful().eval(), torch.randn(2, 4)
    gm = capture(model, (x,)).graph_module
    assert count_ops(gm, aten.linear) == 2  # export keeps the unused branch
    new_gm, record, _ = run_pass("eliminate_dead_code", gm, (x,))
    assert record.status == "fired" and count_ops(new_gm, aten.linear) == 1
    # the stats agree with the node counts of the report (calls), constants counted apart
    assert record.stats["removed"] == record.nodes_before - record.nodes_after == 2  # linear, relu
    assert record.stats["unused_constants"] == 2  # the unused linear's weight and bias
    assert not [n for n in new_gm.graph.nodes if n.op == "get_attr" and not n.users]
    torch.testing.assert_close(new_gm(x), model(x))
    _, again, _ = run_pass("eliminate_dead_code", new_gm, (x,))
    assert again.status == "no change"


def test_must_not_fire_on_a_clean_graph(run_pass):
    x = torch.randn(3)
    gm = capture(Clean(), (x,)).graph_module
    _, record, _ = run_pass("eliminate_dead_code", gm, (x,))
    assert record.status == "no change"


def test_manual_dead_node_is_removed(run_pass):
    x = torch.randn(3)
    gm = capture(Clean(), (x,)).graph_module
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(placeholder):
        gm.graph.call_function(aten.sin.default, (placeholder,))
    gm.recompile()
    new_gm, record, _ = run_pass("eliminate_dead_code", gm, (x,))
    assert record.status == "fired" and not any(n.target is aten.sin.default for n in new_gm.graph.nodes)


def test_symbolic_shapes_bert():
    model, inputs, gm = captured_dynamic("bert")
    new_gm, record, _ = run_pass_at_shapes("eliminate_dead_code", gm, model, inputs_at_shapes("bert", gm, inputs))
    assert record.status == "fired" and record.stats["removed"] > 0
    assert not baked_sizes(gm, new_gm)
