"""The onnx stage: the ONNX passes on an exported model, checked in ONNX Runtime.

    ONNX model ─► PassManager (ir "onnx", stage "onnx"): each pass on a copy (tensors shared) →
                  OrtVerifier, once for the stage: the runtime that will serve the result (CPU)
                  on every input set, same answers as the references? keep, and that runtime is
                  the build's : judged by itself at ORT's basic level, bisect to the first wrong
                  pass, roll it back, say why

The same :class:`accelc.pass_manager.PassManager` as the fx stages, so a pass that raises is
failed, one that changes the outputs is rolled back, and the records, statuses and refusals
(``ctx.refusals``, stage "onnx") are those of every other stage. A model with dynamic sizes is
checked at several of them (the example and the caller's input sets at other batch sizes and
sequence lengths), so a pass that is right only at the example's shape, having written a size
into the graph, is rolled back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import torch

from torch.utils import _pytree as pytree

from ..pass_base import Pass, PassContext
from ..pass_manager import FIRED, PassManager, PassRecord
from ..stages import ONNX
from ..verify import Comparison, Verifier, run_detached, tolerance_for_precision
from .session import disabled_fusions, session_options
from .weights_apart import WeightsApart, weights_apart

log = logging.getLogger(__name__)


def run_all_in_ort(model: "onnx.ModelProto | WeightsApart", input_sets: list[tuple],
                   arg_names: list[str]) -> list[list[torch.Tensor]]:
    """Outputs of ``model`` on each input set, from one CPU InferenceSession.

    The session optimises at ORT's basic level (constant folding, redundant nodes), not with its
    fusions: this judges a rewrite, and opens one session per candidate; what runs in the end
    (every fusion on) is checked against eager on every input set by the caller. Basic opens a
    BERT-base session in a fraction of the time.
    """
    import onnxruntime as ort

    # opened from memory, the weights handed over as arrays (accelc.onnx.weights_apart)
    source = model if isinstance(model, WeightsApart) else weights_apart(model)
    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source.add_to(options)
    session = ort.InferenceSession(source.graph_bytes, sess_options=options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled_fusions("CPUExecutionProvider"))
    results = []
    for inputs in input_sets:
        feeds = {}
        for i, value in enumerate(session.get_inputs()):
            index = arg_names.index(value.name) if value.name in arg_names else i
            feeds[value.name] = inputs[index].detach().cpu().numpy()
        results.append([torch.from_numpy(np.ascontiguousarray(o)) for o in session.run(None, feeds)])
    return results


def run_in_ort(model: onnx.ModelProto, inputs: tuple, arg_names: list[str]) -> list[torch.Tensor]:
    """Outputs of ``model`` on ``inputs`` in a CPU InferenceSession, as torch tensors."""
    return run_all_in_ort(model, [inputs], arg_names)[0]


def check_in_ort(model: "onnx.ModelProto | WeightsApart", cases: list[tuple[tuple, list]], arg_names: list[str],
                 tolerance_of) -> Comparison:
    """``model`` against the reference outputs of every (inputs, reference) case; the first
    failure names the input shapes it happened at, else the worst error over all cases."""
    return _against(cases, tolerance_of).compare(run_all_in_ort(model, [inputs for inputs, _ in cases], arg_names))


def _against(cases: list[tuple[tuple, list]], tolerance_of) -> Verifier:
    """The cases' references as a :class:`accelc.verify.Verifier` at ``tolerance_of``."""
    verifier = Verifier([inputs for inputs, _ in cases], [reference for _, reference in cases])
    verifier.tolerance_of = tolerance_of
    return verifier


class OrtVerifier:
    """The pass manager's verifier for ONNX models: a candidate is run in ORT on every (inputs,
    reference outputs) case and compared with the references.

    With ``open_runtime`` (the model as :class:`WeightsApart` → the runtime that would serve it:
    ORT's full optimisation, its sessions pinned and dynamic), a candidate is first run by that
    very runtime: when it passes, the runtime is the stage's (:attr:`served`), with its answers on
    the cases, and no second session is opened for it (GPT-2: the check's session, 2-2.5 s). When
    it fails, or without ``open_runtime`` (CUDA: the runtime's sessions are not the CPU's), the
    candidate is judged by itself, in a CPU session at ORT's basic level (:func:`check_in_ort`):
    the first failure may be ORT's own fusions, not a pass, and the bisection that follows finds
    the pass to blame at that level. From then on every candidate is judged so.

    The references stay the caller's (eager's answers, or the graph module's) for the whole
    stage: each pass is judged against them, not against the model before it, so the errors of
    successive passes cannot add up unseen. Hence :meth:`accept` keeps nothing.
    """

    def __init__(self, cases: list[tuple[tuple, list]], arg_names: list[str], tolerance_of, open_runtime=None):
        self.cases = cases
        self.arg_names = arg_names
        self.tolerance_of = tolerance_of
        self.open_runtime = open_runtime
        self.passed: tuple[ir.Model, WeightsApart] | None = None  # the last that passed, as model.onnx will hold it
        self.served: tuple[ir.Model, object, list] | None = None  # (model, its runtime, its answers)

    def check(self, model: ir.Model) -> tuple[Comparison, None]:
        apart = weights_apart(model)
        self.served = None
        comparison = self._check_served(model, apart) if self.open_runtime is not None else None
        if comparison is None or not comparison.ok:
            self.open_runtime = None
            comparison = check_in_ort(apart, self.cases, self.arg_names, self.tolerance_of)
        # A model that passed is, in this form, what model.onnx will be when it is the stage's result.
        self.passed = (model, apart) if comparison.ok else None
        return comparison, None

    def _check_served(self, model: ir.Model, apart: WeightsApart) -> Comparison | None:
        """``model`` run by the runtime that would serve it, on every case; None when that
        runtime cannot be opened or raises."""
        try:
            runtime = self.open_runtime(apart)
            answers = [pytree.tree_leaves(run_detached(runtime, inputs)) for inputs, _ in self.cases]
        except Exception:  # judged at the basic level instead, which says what fails
            log.debug("the onnx stage's candidate failed in the serving runtime", exc_info=True)
            return None
        comparison = _against(self.cases, self.tolerance_of).compare(answers)
        if comparison.ok:
            self.served = (model, runtime, answers)
        return comparison

    def accept(self, outputs) -> None:
        pass


def optimize_onnx(model: "ir.Model | onnx.ModelProto", cases: list[tuple[tuple, list]], meta: dict, ctx: PassContext,
                  passes: list[Pass], on_progress=None, open_runtime=None) -> "StageResult":
    """Run ``passes`` (ONNX passes, in order) on ``model``; returns the :class:`StageResult`.
    ``model`` is not changed: each pass edits its own copy (tensors shared).

    ``cases`` are (inputs, flat reference outputs) pairs: the example first, then inputs at other
    sizes for a model with dynamic ones; ``meta["arg_names"]`` maps the model's inputs to
    positions in them. The stage's result is kept only if ORT matches every reference at the
    tolerance of ``ctx.precision``; else the first wrong pass is found and rolled back. What
    the passes refuse goes to ``ctx.refusals`` (stage "onnx"). ``open_runtime`` (the model as
    :class:`WeightsApart` → the runtime that serves it) lets the check run the result in the
    runtime that will serve it (:class:`OrtVerifier`).
    """
    verifier = OrtVerifier(cases, meta["arg_names"], tolerance_for_precision(ctx.precision), open_runtime)
    manager = PassManager(passes, on_progress=on_progress, stage=ONNX, ir="onnx", verifier=verifier)
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    result, records = manager.run(model, ctx)
    if not any(r.status == FIRED for r in records):
        return StageResult(weights_apart(model), records)  # the export as it came, not a round trip of it
    served = verifier.served if verifier.served is not None and verifier.served[0] is result else (None, None, None)
    if verifier.passed is not None and verifier.passed[0] is result:
        return StageResult(verifier.passed[1], records, *served[1:])
    return StageResult(weights_apart(result), records, *served[1:])


@dataclass
class StageResult:
    """What the onnx stage hands the build: the model (:class:`WeightsApart`: its graph, the
    weights apart), one record per pass, and the runtime that ran the check, with its answers on
    the cases, when it was the serving one."""

    model: WeightsApart
    records: list[PassRecord]
    runtime: object | None = None
    answers: list | None = None


__all__ = ["optimize_onnx", "StageResult", "OrtVerifier", "run_in_ort", "run_all_in_ort",
           "check_in_ort"]
