"""Cost model, partitioner, plan serialisation and capability split."""

from __future__ import annotations

import pytest
import torch
from accelc_test_samples import captured

from accelc.partition import Plan, estimate_costs, graph_dag, make_plan
from accelc.partition.partitioner import PartitionError, build_stage_module


def run_plan_by_hand(gm, plan, inputs):
    env = dict(zip(plan.graph_inputs, inputs))
    with torch.no_grad():
        for s in plan.stages:
            env.update(zip(s.outputs, build_stage_module(gm, plan, s.index)(*[env[i] for i in s.inputs])))
    return [env[n] for n in plan.graph_outputs]


def test_linear_flops_and_bytes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    from accelc.capture import capture

    gm = capture(model, (torch.randn(2, 8),)).graph_module
    costs = estimate_costs(gm)
    linear = next(c for n, c in costs.items() if n.startswith("linear"))
    relu = next(c for n, c in costs.items() if n.startswith("relu"))
    assert linear.flops == 2 * 2 * 4 * 8
    assert linear.bytes == 4 * (2 * 8 + 4 * 8 + 4 + 2 * 4)  # x, W, b in; y out
    assert relu.flops == 8
    dag = graph_dag(gm, costs)
    assert dag.number_of_nodes() == len(gm.graph.nodes)


@pytest.mark.parametrize("name", ["cnn", "mlp", "bert", "resnet50"])
@pytest.mark.parametrize("stages", [1, 2, 4])
def test_plan_is_a_valid_chain_matching_eager(name, stages):
    model, inputs, gm = captured(name)
    plan = make_plan(gm, inputs, stages=stages)
    assert plan.num_stages == stages and all(s.nodes for s in plan.stages)
    assert Plan.from_json(plan.to_json()) == plan
    for cut, nxt in zip(plan.cuts, plan.stages[1:]):
        assert cut.tensors == nxt.inputs
    with torch.no_grad():
        want = model(*inputs)
    got = run_plan_by_hand(gm, plan, inputs)
    torch.testing.assert_close(got, list(torch.utils._pytree.tree_leaves(want)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["bert", "resnet50"])
def test_estimated_balance(name):
    _, inputs, gm = captured(name)
    for stages in (2, 4):
        assert make_plan(gm, inputs, stages=stages).balance() <= 1.25


def test_profile_is_kept_in_the_plan():
    _, inputs, gm = captured("cnn")
    plan = make_plan(gm, inputs, stages=2, profile=True)
    assert plan.profiled and set(plan.node_ms) == {n for s in plan.stages for n in s.nodes}
    assert Plan.from_json(plan.to_json()).node_ms == plan.node_ms


def test_faster_device_gets_more_work():
    _, inputs, gm = captured("resnet50")
    even = make_plan(gm, inputs, devices=["cpu", "cpu"])
    hetero = make_plan(gm, inputs, devices=["cpu", "cuda:0"])
    assert len(hetero.stages[1].nodes) > len(even.stages[1].nodes)


def test_bad_requests_are_typed_errors():
    _, inputs, gm = captured("mlp")
    with pytest.raises(PartitionError, match="devices"):
        make_plan(gm, inputs, stages=3, devices=["cpu"])
    with pytest.raises(PartitionError, match="stages"):
        make_plan(gm, inputs, stages=10_000)
    with pytest.raises(PartitionError, match="ascending"):
        make_plan(gm, inputs, stages=3, boundaries=[3, 2])


