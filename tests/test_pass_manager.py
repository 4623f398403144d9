"""The manager: lint and verify after each pass, roll back what breaks, report it by name."""

import pytest
import torch

import accelc
from accelc import Pass, PassContext, PassResult
from accelc.capture import capture
from accelc.pass_manager import FAILED, FIRED, ROLLED_BACK, UNCHANGED, PassManager
from accelc.patterns import aten, find_nodes
from accelc.registry import resolve
from plugin_fixtures import make_plugin


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)

    def forward(self, x):
        return torch.relu(self.lin(x)) + torch.relu(self.lin(x))


class Raises(Pass):
    name = "raises"

    def run(self, gm, ctx):
        raise RuntimeError("plugin bug")


class BreaksGraph(Pass):
    name = "breaks_graph"

    def run(self, gm, ctx):
        assert find_nodes(gm, aten.relu)  # the graph it breaks has a relu
        gm.graph.erase_node(next(iter(gm.graph.nodes)))  # erases a node something still uses
        return PassResult(modified=True)


class ReturnsWrongType(Pass):
    name = "returns_wrong_type"

    def run(self, gm, ctx):
        return True


@pytest.fixture
def graph():
    model = Net().eval()
    inputs = (torch.randn(3, 6),)
    return model, inputs, capture(model, inputs).graph_module


def _run(passes, graph):
    model, inputs, gm = graph
    ctx = PassContext(example_inputs=inputs)
    return PassManager(passes, verify=True).run(gm, ctx)


def test_wrong_pass_is_rolled_back_and_the_pipeline_goes_on(graph, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site")))
    model, inputs, _ = graph
    new_gm, records = _run(resolve(["break_relu", "eliminate_common_subexpressions"]), graph)
    assert records[0].status == ROLLED_BACK and "changed the outputs" in records[0].reason
    assert records[1].status == FIRED
    assert find_nodes(new_gm, aten.relu) and not find_nodes(new_gm, aten.sigmoid)
    torch.testing.assert_close(new_gm(*inputs), model(*inputs))


@pytest.mark.parametrize("bad, status, text", [
    (Raises(), FAILED, "raised RuntimeError: plugin bug"),
    (BreaksGraph(), FAILED, "raised"),
    (ReturnsWrongType(), FAILED, "returned bool, not PassResult"),
])
def test_broken_passes_are_contained(graph, bad, status, text):
    model, inputs, gm = graph
    before = str(gm.graph)
    new_gm, records = _run([bad], graph)
    assert records[0].status == status and text in records[0].reason
    assert str(new_gm.graph) == before


def test_unchanged_pass_keeps_the_graph(graph):
    new_gm, records = _run(resolve(["remove_noops"]), graph)
    assert records[0].status == UNCHANGED and new_gm is graph[2]


def test_accelerate_names_the_wrong_pass_in_the_report(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site")))
    model, inputs = Net().eval(), (torch.randn(3, 6),)
    fast = accelc.accelerate(model, inputs, passes=["break_relu", "eliminate_common_subexpressions", "eliminate_dead_code"])
    by_name = {r["name"]: r for r in fast.report["passes"]}
    assert by_name["break_relu"]["status"] == ROLLED_BACK
    assert fast.report["verification"]["ok"] and fast.report["fallback"] is None
    torch.testing.assert_close(fast(*inputs), model(*inputs))
