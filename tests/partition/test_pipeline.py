"""Executors: random plans and micro-batch counts give eager's outputs; failures name the stage."""

from __future__ import annotations

import threading

import pytest
import torch
from accelc_test_samples import captured
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelc.partition import make_plan
from accelc.runtime.pipeline import StageError, build_executor


def _batched(inputs, m):
    return tuple(torch.cat([x] * m) if isinstance(x, torch.Tensor) else x for x in inputs)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["cnn", "mlp", "bert", "resnet50"]), stages=st.integers(1, 4),
       microbatches=st.integers(1, 8), data=st.data())
def test_random_plans_match_eager(name, stages, microbatches, data):
    model, inputs, gm = captured(name)
    n = sum(1 for x in gm.graph.nodes if x.op == "call_function")
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), min_size=stages - 1, max_size=stages - 1)))
    plan = make_plan(gm, inputs, stages=stages, boundaries=cuts)
    before, threads = threading.active_count(), torch.get_num_threads()
    executor = build_executor(gm, plan, microbatches=microbatches, timeout_s=60)
    batch = _batched(inputs, microbatches)
    with torch.no_grad():
        want = model(*batch)
    torch.testing.assert_close(executor(*batch), want, rtol=1e-4, atol=1e-4)
    assert threading.active_count() == before
    assert torch.get_num_threads() == threads  # stage budgets are per thread; the caller's is restored
    assert len(executor.timeline.intervals) == stages * microbatches


def test_failing_stage_names_stage_and_nodes():
    _, inputs, gm = captured("cnn")
    plan = make_plan(gm, inputs, stages=3)
    executor = build_executor(gm, plan, microbatches=4, timeout_s=30)

    def boom(*args):
        raise RuntimeError("kernel exploded")

    executor.stage_modules[1].forward = boom
    before = threading.active_count()
    with pytest.raises(StageError, match=r"stage 1 on cpu failed: RuntimeError: kernel exploded \[nodes: " + plan.stages[1].nodes[0]):
        executor(*_batched(inputs, 4))
    assert threading.active_count() == before


def test_timeline_chrome_trace(tmp_path):
    _, inputs, gm = captured("mlp")
    executor = build_executor(gm, make_plan(gm, inputs, stages=2), microbatches=3)
    executor(*_batched(inputs, 3))
    path = tmp_path / "trace.json"
    executor.timeline.save_chrome_trace(path)
    import json

    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert len(events) == 6 and all(e["dur"] >= 0 for e in events)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_cuda_split_matches_eager():
    model, inputs, gm = captured("resnet50")
    plan = make_plan(gm, inputs, devices=["cpu", "cuda:0"])
    executor = build_executor(gm, plan, microbatches=4)
    batch = _batched(inputs, 4)
    with torch.no_grad():
        want = model(*batch)
    torch.testing.assert_close(executor(*batch).cpu(), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch_is_split_at_any_call_size(batch):
    """A graph with a dynamic batch splits any call's batch into min(M, batch) chunks (a batch
    of 3 into 2 and 1, a batch of 1 not at all); the merged output equals the graph's."""
    import accelc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    fast = accelc.accelerate(model, (torch.randn(2, 16),), backend="torch", stages=2, microbatches=2, measure=False)
    assert fast.report["partition"]["microbatches"] == 2 and not fast.report.get("backend_fallback")
    x = torch.randn(batch, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x))


def test_static_graph_called_at_its_micro_batch_size_runs_once():
    import accelc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    fast = accelc.accelerate(model, (torch.randn(8, 16),), backend="torch", stages=2, microbatches=2, static=True,
                             measure=False)
    assert not fast.report.get("backend_fallback"), fast.report.get("backend_fallback")
    x = torch.randn(8, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x))
