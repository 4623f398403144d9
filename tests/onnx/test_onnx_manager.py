"""The onnx stage on the one pass manager: ONNX passes get the fx passes' contract (a pass that
raises is failed, one that changes the answers is rolled back, the stage goes on), the same
records and statuses, and their refusals join the compilation's context with stage "onnx"."""

from __future__ import annotations

import onnx_ir as ir
import torch

from accelc.onnx.optimize import optimize_onnx, run_all_in_ort
from accelc.onnx.pass_base import OnnxPass, PassResult
from accelc.pass_base import PassContext
from accelc.pass_manager import FAILED, FIRED, ROLLED_BACK, STATUSES, UNCHANGED, PassRecord
from accelc.verify import compare_outputs

from onnx_samples import POINTS, build, captured_dynamic, eager_outputs, exported_dynamic, inputs_at, onnx_passes


class Explode(OnnxPass):
    """A broken plugin: it raises."""

    name = "explode"

    def run(self, model, ctx):
        raise RuntimeError("boom")


class NegateTheOutput(OnnxPass):
    """A wrong rewrite: the first output negated."""

    name = "negate_the_output"

    def run(self, model, ctx):
        node = ir.Node("", "Neg", [model.graph.outputs[0]])
        model.graph.append(node)
        node.outputs[0].name = "negated_output"
        model.graph.outputs[0] = node.outputs[0]
        return PassResult(True, {"negated": 1})


class RefuseTheFirstNode(OnnxPass):
    """Looks at the first node and leaves it alone."""

    name = "refuse_the_first_node"

    def run(self, model, ctx):
        ctx.refuse(next(iter(model.graph)), "not today")
        return PassResult(False)


class IdentityOnTheOutput(OnnxPass):
    """A harmless rewrite: the first output through an Identity."""

    name = "identity_on_the_output"
    output_name = "identity_output"

    def run(self, model, ctx):
        node = ir.Node("", "Identity", [model.graph.outputs[0]])
        model.graph.append(node)
        node.outputs[0].name = self.output_name
        model.graph.outputs[0] = node.outputs[0]
        return PassResult(True, {"identities": 1})


def test_optimize_onnx_runs_the_stage_on_the_pass_manager(export_root, tmp_path):
    """One PassRecord per pass with the manager's four statuses, in order: the raising pass is
    failed and the stage goes on, the wrong one is rolled back, only the right one is kept."""
    _, inputs, _, gm = captured_dynamic("mlp")
    cases = [(x, eager_outputs("mlp", x)) for x in (inputs, inputs_at("mlp", (3,)))]
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}
    ctx = PassContext()
    passes = [Explode(), NegateTheOutput(), RefuseTheFirstNode(), IdentityOnTheOutput()]
    progress = []
    stage = optimize_onnx(exported_dynamic("mlp", export_root).model, cases, meta, ctx, passes,
                          on_progress=progress.append)
    model, records = stage.model, stage.records
    assert all(isinstance(r, PassRecord) and r.status in STATUSES and r.stage == "onnx" for r in records)
    assert [(r.name, r.status) for r in records] == [
        ("explode", FAILED), ("negate_the_output", ROLLED_BACK), ("refuse_the_first_node", UNCHANGED),
        ("identity_on_the_output", FIRED)]
    assert records[0].reason == "raised RuntimeError: boom", records[0]
    assert records[1].reason.startswith("changed the outputs: at input shapes (1, 64)"), records[1]
    assert [(r.pass_name, r.reason, r.stage) for r in ctx.refusals] == [("refuse_the_first_node", "not today", "onnx")]
    assert ctx.stage == "graph" and "onnx pass 4/4: identity_on_the_output" in progress
    assert [o.name for o in model.proto.graph.output] == ["identity_output"]  # the kept rewrite, not the rolled-back one
    feeds = [inputs_at("mlp", p) for p in POINTS["mlp"]]
    for feed, got in zip(feeds, run_all_in_ort(model, feeds, meta["arg_names"])):
        assert compare_outputs(got, eager_outputs("mlp", feed)).ok


def test_no_pass_fires_and_the_export_comes_back_as_it_was(export_root, tmp_path):
    _, inputs, _, gm = captured_dynamic("mlp")
    export = exported_dynamic("mlp", export_root).model
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}
    stage = optimize_onnx(export, [(inputs, eager_outputs("mlp", inputs))], meta, PassContext(),
                          [RefuseTheFirstNode()])
    model, records = stage.model, stage.records
    assert [r.status for r in records] == [UNCHANGED]
    assert [(n.op_type, list(n.input)) for n in model.proto.graph.node] == [(n.op_type, list(n.input)) for n in export.graph.node]


def test_onnx_refusals_join_the_compilations_context():
    """The built-in passes' refusals reach the context the caller gave, beside the fx stages',
    and the report section's records are the manager's."""
    _, inputs, spec, gm = captured_dynamic("gpt2")
    ctx = PassContext()
    ctx.current_pass = "fold_constants"
    ctx.refuse("mask", "an fx refusal")
    fx_refusals = ctx.refusals
    _, report = build(gm, inputs, "cpu", ctx=ctx, passes=onnx_passes(names=["fuse_attention", "split_causal_attention"]),
                      dynamic_shapes=spec)
    assert ctx.refusals is fx_refusals and ctx.refusals[0].stage == "graph"
    onnx = [(r.pass_name, r.reason) for r in ctx.refusals if r.stage == "onnx"]
    assert onnx == [("split_causal_attention", "query length is symbolic: chunks are decided at build time")] * 2, ctx.refusals
    assert [(r["name"], r["status"], r["stage"]) for r in report["onnx_passes"]] == [
        ("fuse_attention", FIRED, "onnx"), ("split_causal_attention", UNCHANGED, "onnx")]


class IdentityAgain(IdentityOnTheOutput):
    """The harmless rewrite once more, under another name."""

    name = "identity_again"
    output_name = "identity_again_output"


def test_a_stage_of_right_passes_is_checked_in_one_session(export_root, tmp_path, monkeypatch):
    """The stage is checked once (one ORT session), not once per pass; a wrong pass between right
    ones is found by bisection and only it is rolled back."""
    import accelc.onnx.optimize as optimize

    sessions = []
    real = optimize.run_all_in_ort
    monkeypatch.setattr(optimize, "run_all_in_ort", lambda *a, **k: sessions.append(1) or real(*a, **k))
    _, inputs, _, gm = captured_dynamic("mlp")
    cases = [(x, eager_outputs("mlp", x)) for x in (inputs, inputs_at("mlp", (3,)))]
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}
    export = exported_dynamic("mlp", export_root).model
    records = optimize_onnx(export, cases, meta, PassContext(), [IdentityOnTheOutput(), IdentityAgain()]).records
    assert [r.status for r in records] == [FIRED, FIRED] and len(sessions) == 1
    sessions.clear()
    stage = optimize_onnx(export, cases, meta, PassContext(),
                          [IdentityOnTheOutput(), NegateTheOutput(), IdentityAgain()])
    model, records = stage.model, stage.records
    assert [r.status for r in records] == [FIRED, ROLLED_BACK, FIRED], records
    assert [o.name for o in model.proto.graph.output] == ["identity_again_output"]
    assert len(sessions) <= 4  # the stage, two bisection steps, the redone pass


class ScaleTheFirstWeightInPlace(OnnxPass):
    """Breaks the contract: writes into a weight it was given instead of replacing it."""

    name = "scale_the_first_weight_in_place"

    def run(self, model, ctx):
        weight = next(v for v in model.graph.initializers.values() if v.const_value is not None
                      and len(v.const_value.shape) == 2)
        weight.const_value.numpy()[...] *= 2.0
        return PassResult(True, {"scaled": 1})


class ReplaceTheFirstWeight(OnnxPass):
    """A numpy-backed weight of its own, replacing the exported one (which later passes share)."""

    name = "replace_the_first_weight"

    def run(self, model, ctx):
        weight = next(v for v in model.graph.initializers.values() if v.const_value is not None
                      and len(v.const_value.shape) == 2)
        weight.const_value = ir.tensor(weight.const_value.numpy().copy(), name=weight.name)
        return PassResult(True, {"replaced": 1})


def test_copies_share_weights_and_no_pass_writes_into_one(export_root, tmp_path):
    """The manager's copies share tensors with the model before them (no weight copied per pass);
    a pass that writes into a weight in place, whether the exporter's or one an earlier pass made,
    is failed and named, and the model the stage returns holds the weights as they were. The
    export is the build's (its weights the graph module's own memory): the graph module's
    weights are unchanged too."""
    _, inputs, _, gm = captured_dynamic("mlp")
    weights_before = {name: t.clone() for name, t in gm.state_dict().items()}
    cases = [(x, eager_outputs("mlp", x)) for x in (inputs, inputs_at("mlp", (3,)))]
    meta = {"arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"]}
    for export in (exported_dynamic("mlp", export_root).ir_model, exported_dynamic("mlp", export_root).model):
        for passes in ([ScaleTheFirstWeightInPlace()], [ReplaceTheFirstWeight(), ScaleTheFirstWeightInPlace()]):
            stage = optimize_onnx(export, cases, meta, PassContext(), passes)
            model, records = stage.model, stage.records
            assert records[-1].status == FAILED and "read-only" in records[-1].reason, records[-1]
            assert all(r.status == FIRED for r in records[:-1]), records
            outputs = run_all_in_ort(model, [x for x, _ in cases], meta["arg_names"])
            for got, (_, reference) in zip(outputs, cases):
                assert compare_outputs(got, reference).ok
    for name, t in gm.state_dict().items():
        assert torch.equal(t, weights_before[name]), name
