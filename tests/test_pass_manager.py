"""The manager's contract over fx graphs: lint and verify after each pass, roll back what breaks,
stop writes into weights, report it by name; managers nest. (The same manager over ONNX models:
tests/onnx/test_onnx_manager.py.)"""

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


class ScalesWeightInPlace(Pass):
    name = "scales_weight_in_place"

    def run(self, gm, ctx):
        with torch.no_grad():
            next(iter(gm.parameters())).mul_(2)  # the weight is shared with the user's nn.Linear
        return PassResult(modified=True)


class ZerosBufferThroughData(Pass):
    name = "zeros_through_data"

    def run(self, gm, ctx):
        for p in gm.parameters():
            p.data.zero_()
        return PassResult(modified=False)


@pytest.mark.parametrize("bad", [ScalesWeightInPlace(), ZerosBufferThroughData()])
def test_a_pass_that_writes_into_a_weight_is_failed_and_nothing_changes(graph, bad):
    model, inputs, gm = graph
    user_weight = model.lin.weight.detach().clone()
    expected = model(*inputs)
    new_gm, records = _run([bad], graph)
    assert records[0].status == FAILED and "wrote into weight" in records[0].reason, records[0]
    assert new_gm is gm
    torch.testing.assert_close(model.lin.weight, user_weight, rtol=0, atol=0)  # the user's model
    torch.testing.assert_close(gm(*inputs), expected)  # and the kept graph


def test_a_graph_that_writes_into_its_weights_when_run_is_rolled_back(graph):
    class InsertsInplaceAdd(Pass):
        name = "inserts_inplace_add"

        def run(self, gm, ctx):
            weight = next(n for n in gm.graph.nodes if n.op == "get_attr")
            with gm.graph.inserting_after(weight):
                bumped = gm.graph.call_function(aten.add_.Tensor, (weight, 1.0))
            for user in list(weight.users):
                if user is not bumped:
                    user.replace_input_with(weight, bumped)
            return PassResult(modified=True)

    model, inputs, gm = graph
    user_weight = model.lin.weight.detach().clone()
    new_gm, records = _run([InsertsInplaceAdd()], graph)
    assert records[0].status == ROLLED_BACK and "wrote into weight" in records[0].reason, records[0]
    torch.testing.assert_close(model.lin.weight, user_weight, rtol=0, atol=0)


def test_accelerate_fails_the_contract_breaker_by_name_and_leaves_the_model_alone(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site", entries={
        "scale_weights_in_place": "accelc_test_plugin:ScaleWeightsInPlace"})))
    model, inputs = Net().eval(), (torch.randn(3, 6),)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(*inputs)
    fast = accelc.accelerate(model, inputs, backend="torch", passes=["scale_weights_in_place", "remove_noops"])
    record = next(r for r in fast.report["passes"] if r["name"] == "scale_weights_in_place")
    assert record["status"] == FAILED and "wrote into weight" in record["reason"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(fast(*inputs), expected)


def test_managers_nest_and_keep_the_inner_records(graph):
    model, inputs, gm = graph
    inner = PassManager(resolve(["eliminate_common_subexpressions", "eliminate_dead_code"]), verify=True)
    outer = PassManager([resolve(["remove_noops"])[0], inner], verify=True)
    new_gm, records = outer.run(gm, PassContext(example_inputs=inputs))
    assert [r.name for r in records] == ["remove_noops", "pipeline"] and records[1].status == FIRED
    assert [r.name for r in inner.records] == ["eliminate_common_subexpressions", "eliminate_dead_code"]
    assert inner.records[0].status == FIRED
    assert len(find_nodes(new_gm, aten.relu)) == 1  # the two relu(lin(x)) became one
    torch.testing.assert_close(new_gm(*inputs), model(*inputs))


def test_accelerate_never_changes_the_users_model():
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.5), torch.nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = (torch.randn(4, 6),)
    fast = accelc.accelerate(model, inputs, backend="torch")
    assert model.training and all(m.training for m in model.modules())  # mode kept
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(fast(*inputs), model.eval()(*inputs))  # answers as in eval mode


class Retarget(Pass):
    """Wrong on purpose: every call of ``source`` becomes a call of ``target``."""
    source = target = None

    def run(self, gm, ctx):
        nodes = find_nodes(gm, self.source)
        for node in nodes:
            node.target = self.target
        return PassResult(modified=bool(nodes))


class ReluToSigmoid(Retarget):
    """relu(x) -> sigmoid(x)."""
    name = "relu_to_sigmoid"
    source, target = aten.relu, aten.sigmoid.default


class RefusesEachRelu(Pass):
    """Right and fires (adds a no-op clone after each relu); refuses each relu it saw, to count."""
    name = "refuses_each_relu"

    def run(self, gm, ctx):
        nodes = find_nodes(gm, aten.relu)
        for node in nodes:
            ctx.refuse(node, "counted")
            with gm.graph.inserting_after(node):
                clone = gm.graph.call_function(aten.clone.default, (node,))
            node.replace_all_uses_with(clone, delete_user_cb=lambda user: user is not clone)
        return PassResult(modified=bool(nodes))


class SigmoidToTanh(Retarget):
    """Fires only on what relu_to_sigmoid made (and is wrong there too): must not outlive it."""
    name = "sigmoid_to_tanh"
    source, target = aten.sigmoid, aten.tanh.default


def _counting_verifier(gm, inputs):
    from accelc.verify import Verifier

    verifier = Verifier.for_module(gm, inputs)
    verifier.checks = 0
    check = verifier.check

    def counted(module):
        verifier.checks += 1
        return check(module)

    verifier.check = counted
    return verifier


def test_a_stage_of_right_passes_is_checked_once(graph):
    model, inputs, gm = graph
    verifier = _counting_verifier(gm, inputs)
    passes = resolve(["eliminate_common_subexpressions"]) + [RefusesEachRelu()]
    new_gm, records = PassManager(passes).run(gm, PassContext(example_inputs=inputs), verifier)
    assert [r.status for r in records] == [FIRED, FIRED] and verifier.checks == 1
    assert records[-1].max_abs_error is not None  # the stage's check is on the record of the last pass kept
    torch.testing.assert_close(new_gm(*inputs), model(*inputs))


@pytest.mark.parametrize("where", [0, 1, 2])
def test_bisection_rolls_back_the_wrong_pass_and_redoes_the_ones_after_it(graph, where):
    """Wherever the wrong pass sits, it alone is rolled back; a pass that fired only on its graph
    does not survive it; what the redone passes refuse is not counted twice."""
    model, inputs, gm = graph
    right = resolve(["eliminate_common_subexpressions"]) + [RefusesEachRelu()]
    passes = right[:where] + [ReluToSigmoid(), SigmoidToTanh()] + right[where:]
    ctx = PassContext(example_inputs=inputs)
    verifier = _counting_verifier(gm, inputs)
    new_gm, records = PassManager(passes).run(gm, ctx, verifier)
    status = {r.name: r.status for r in records}
    assert [r.name for r in records] == [p.name for p in passes]
    assert status["relu_to_sigmoid"] == ROLLED_BACK and "changed the outputs" in records[where].reason
    assert status["sigmoid_to_tanh"] == UNCHANGED  # redone on the graph before relu_to_sigmoid: nothing to do
    assert status["eliminate_common_subexpressions"] == FIRED and status["refuses_each_relu"] == FIRED
    assert len([r for r in ctx.refusals if r.pass_name == "refuses_each_relu"]) == 1  # one relu after CSE
    assert not find_nodes(new_gm, aten.sigmoid) and not find_nodes(new_gm, aten.tanh)
    assert verifier.checks <= 5  # one for the stage, two to bisect 4 graphs, one for the passes redone
    torch.testing.assert_close(new_gm(*inputs), model(*inputs))


def test_two_wrong_passes_are_both_rolled_back(graph):
    model, inputs, gm = graph
    passes = [ReluToSigmoid()] + resolve(["eliminate_common_subexpressions"]) + [ReluToSigmoid()]
    passes[2].name = "relu_to_sigmoid_again"
    new_gm, records = PassManager(passes).run(gm, PassContext(example_inputs=inputs))
    assert [r.status for r in records] == [ROLLED_BACK, FIRED, ROLLED_BACK]
    torch.testing.assert_close(new_gm(*inputs), model(*inputs))
