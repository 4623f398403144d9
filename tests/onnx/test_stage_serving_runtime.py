"""The onnx stage's check runs its result in the runtime that will serve it (accelc.onnx.optimize.
OrtVerifier): on the CPU a build opens the serving sessions only (pinned and dynamic, side by side),
the runtime's answers on the stage's cases are what the caller's check compares, and a result the
serving runtime gets wrong is judged again by itself, at ORT's basic level, as before."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from accelc.background import Background
from accelc.onnx.optimize import optimize_onnx
from accelc.pass_base import PassContext
from accelc.pass_manager import FIRED, ROLLED_BACK
from accelc.verify import compare_outputs

from onnx_samples import build, captured_dynamic, eager_outputs, exported_dynamic, inputs_at
from test_onnx_manager import IdentityAgain, IdentityOnTheOutput, NegateTheOutput

BASIC, ALL = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@pytest.fixture
def opened(monkeypatch):
    """The optimisation level of every InferenceSession opened while the test runs."""
    levels = []
    real = ort.InferenceSession.__init__

    def spy(self, *args, **kwargs):
        options = kwargs.get("sess_options")
        levels.append(options.graph_optimization_level if options is not None else None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "__init__", spy)
    return levels


def _mlp_cases():
    _, inputs, spec, gm = captured_dynamic("mlp")
    probes = [inputs_at("mlp", (3,)), inputs_at("mlp", (7,), seed=1)]
    return gm, inputs, spec, probes


def test_the_build_opens_only_the_serving_sessions_and_hands_over_their_answers(opened):
    gm, inputs, spec, probes = _mlp_cases()
    runtime, report = build(gm, inputs, "cpu", passes=[IdentityOnTheOutput()], dynamic_shapes=spec,
                            probe_inputs=probes)
    assert [r["status"] for r in report["onnx_passes"]] == [FIRED]
    assert opened == [ALL, ALL]  # pinned to the example, and for other sizes: no check session beside them
    assert runtime._dynamic_run is not None  # opened with the pinned one, not at the first call
    checked = runtime.take_checked_answers()
    assert len(checked) == 1 + len(probes) and runtime.take_checked_answers() is None  # handed over once
    for x, answers in zip([inputs, *probes], checked):
        with torch.inference_mode():
            assert compare_outputs(answers, runtime(*x)).ok
            assert compare_outputs(answers, eager_outputs("mlp", x)).ok


def test_a_result_the_serving_runtime_gets_wrong_is_judged_by_itself_and_the_wrong_pass_rolled_back(
        export_root, tmp_path, opened):
    """The first check fails in the serving runtime: the stage falls back to the basic-level
    sessions for it and for the bisection, rolls back only the wrong pass, and hands over no
    runtime (the build opens fresh sessions for what was kept)."""
    gm, inputs, _, probes = _mlp_cases()
    cases = [(x, eager_outputs("mlp", x)) for x in (inputs, *probes)]
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}
    served = []

    def open_runtime(data):
        from accelc.runtime.onnxruntime import OrtRuntime

        served.append(OrtRuntime(str(tmp_path / "model.onnx"), torch.device("cpu"), meta, model_in_memory=data))
        return served[-1]

    stage = optimize_onnx(exported_dynamic("mlp", export_root).model, cases, meta, PassContext(),
                          [IdentityOnTheOutput(), NegateTheOutput(), IdentityAgain()], open_runtime=open_runtime)
    assert [r.status for r in stage.records] == [FIRED, ROLLED_BACK, FIRED]
    assert len(served) == 1 and stage.runtime is None and stage.answers is None
    assert opened[:1] == [ALL] and set(opened[1:]) == {BASIC}


def test_a_serving_runtime_that_cannot_open_leaves_the_check_to_the_basic_level(export_root, tmp_path, opened):
    gm, inputs, _, probes = _mlp_cases()
    cases = [(x, eager_outputs("mlp", x)) for x in (inputs, *probes)]
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}

    def cannot_open(data):
        raise RuntimeError("no provider")

    stage = optimize_onnx(exported_dynamic("mlp", export_root).model, cases, meta, PassContext(),
                          [IdentityOnTheOutput()], open_runtime=cannot_open)
    assert [r.status for r in stage.records] == [FIRED] and stage.runtime is None
    assert opened == [BASIC]


def test_background_work_hands_back_its_value_or_its_exception():
    assert Background(lambda: 41 + 1, "t").result() == 42
    assert Background(lambda: 7, "t", on_thread=False).result() == 7

    def fails():
        raise ValueError("bad model")

    work = Background(fails, "t")
    with pytest.raises(ValueError, match="bad model"):
        work.result()
    with pytest.raises(ValueError, match="bad model"):
        Background(fails, "t", on_thread=False).result()
