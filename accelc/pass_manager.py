"""Runs an ordered list of passes, of either IR, and checks what they made.

For every pass the manager:
1. copies the graph (nodes copied, weight tensors shared: read-only for ONNX, guarded for fx),
2. runs the pass on the copy; on fx graphs, any write into an existing weight tensor is stopped
   where it happens (:class:`accelc.contract.WeightWriteGuard`): those tensors are shared with
   the graph before the pass and with the user's model, so the pass is failed and named and
   nothing it touched is kept,
3. validates the copy (fx: lint and recompile); a pass that raises or breaks the graph is
   failed and named, and the next pass gets the graph as it was.

With a verifier, the graph the last pass left is then run on the verifier's input sets and
compared with the references (dtype-aware tolerances, :mod:`accelc.verify`): one check for the
whole list, since each check runs the model several times and most passes are right. When it
fails, bisection over the graphs the passes left names the first wrong pass; it is rolled back,
the passes after it run again without it, and the record says why. So every pass kept has been
checked on every set, at the cost of one check, or about log2(passes fired) more per wrong pass.

A manager is itself a pass (of the same IR): managers nest, and the inner one's records are kept.
What differs between the IRs (copy, validation, node count) is a :class:`GraphKind`; what the
copy is checked against is the verifier's business (fx: :class:`accelc.verify.Verifier`; ONNX:
:class:`accelc.onnx.optimize.OrtVerifier`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch.fx

from .capture import count_compute_nodes
from .contract import PassContractError, WeightWriteGuard
from .pass_base import Pass, PassContext, PassResult
from .patterns import fetch_attr
from .source import first_line

log = logging.getLogger(__name__)

FIRED, UNCHANGED, ROLLED_BACK, FAILED = "fired", "no change", "rolled back", "failed"
STATUSES = (FIRED, UNCHANGED, ROLLED_BACK, FAILED)


@dataclass
class PassRecord:
    """One pass's outcome, as it appears in the report."""

    name: str
    status: str
    stats: dict[str, int] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    max_abs_error: float | None = None
    reason: str | None = None
    stage: str = "graph"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def copy_graph_module(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A new GraphModule with a deep-copied graph and the same (shared) weight tensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree spec deprecation noise from deepcopy
        graph = copy.deepcopy(gm.graph)
    new = torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    new.meta = dict(getattr(gm, "meta", {}))
    return new


class GraphKind:
    """How the manager handles one IR's graphs."""

    ir = "fx"

    def copy(self, gm):
        return copy_graph_module(gm)

    def validate(self, gm) -> None:
        gm.graph.lint()
        gm.recompile()

    def count(self, gm) -> int:
        return count_compute_nodes(gm)

    def guard(self, gm):
        return WeightWriteGuard.of(gm)

    def guard_all(self, gms: list):
        return WeightWriteGuard.of_all(gms)

    def adopt(self, target, source) -> None:
        """Make ``target`` the graph ``source`` is (a nested manager's result, kept in place)."""
        for node in source.graph.nodes:
            if node.op in ("get_attr", "call_module"):
                _assign_attr(target, node.target, fetch_attr(source, node.target))
        target.graph = source.graph
        target.meta = dict(source.meta)
        target.recompile()


def _assign_attr(root, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        if not hasattr(root, part):
            root.add_module(part, torch.nn.Module())
        root = getattr(root, part)
    for table in ("_parameters", "_buffers", "_modules"):
        getattr(root, table, {}).pop(last, None)
    setattr(root, last, value)


class OnnxModels(GraphKind):
    ir = "onnx"

    def copy(self, model):
        """Nodes and values cloned, tensors shared (onnx-ir's ``Model.clone``): a copy costs the
        graph's size, not the weights' (a serialise/deserialise round trip of BERT-base took
        0.65 s a pass). Passes replace tensors and never write into one; the numpy arrays behind
        tensors are made read-only, so a pass that tries raises and is failed and named."""
        import onnx_ir as ir

        try:
            clone = model.clone()
        except RuntimeError:  # onnx-ir clones no subgraph that reads a value defined after its node
            clone = ir.serde.deserialize_model(ir.serde.serialize_model(model))
        for graph in (clone.graph, *clone.graph.subgraphs()):
            for value in graph.initializers.values():
                raw = getattr(value.const_value, "raw", None)
                if isinstance(raw, np.ndarray):
                    raw.flags.writeable = False
        return clone

    def validate(self, model) -> None:
        pass  # serialisation (in the verifier, and at save) is the check the ONNX IR has

    def count(self, model) -> int:
        return sum(1 for _ in model.graph.all_nodes())

    def guard(self, model):
        return contextlib.nullcontext()  # each pass edits its own deserialised copy

    def guard_all(self, models: list):
        return contextlib.nullcontext()

    def adopt(self, target, source) -> None:
        target.graph = source.graph
        target.functions.clear()
        target.functions.update(source.functions)


KINDS = {"fx": GraphKind(), "onnx": OnnxModels()}


class PassManager(Pass):
    """Applies passes in order; see the module docstring for what happens around each one."""

    name = "pipeline"

    def __init__(self, passes: list[Pass], verify: bool = True, on_progress: Callable[[str], None] | None = None,
                 stage: str = "graph", ir: str | None = None, verifier=None):
        self.passes = passes
        self.verify = verify
        self.on_progress = on_progress or (lambda message: None)
        self.stage = stage
        self.ir = ir or (passes[0].ir if passes else "fx")
        mixed = [p.name for p in passes if p.ir != self.ir]
        if mixed:
            raise TypeError(f"passes {mixed} are not {self.ir} passes; one manager runs one IR")
        self.kind = KINDS[self.ir]
        self.verifier = verifier
        self.records: list[PassRecord] = []
        self.outputs: list | None = None

    def run(self, graph, ctx: PassContext, verifier=None):
        """Run every pass on ``graph``; returns (the resulting graph, one record per pass).

        Without ``verifier`` (and with ``verify``), fx graphs are checked on the example inputs
        (``ctx.example_inputs``) against the graph as given.
        """
        verifier = verifier or self.verifier
        if self.verify and verifier is None and self.ir == "fx":
            from .verify import Verifier, tolerance_for_precision

            verifier = Verifier.for_module(graph, ctx.example_inputs)
            verifier.tolerance_of = tolerance_for_precision(ctx.precision)  # lowering on purpose is judged by its dtype
        stage, ctx.stage = ctx.stage, self.stage
        try:
            graph, records, outputs = self._run_checked(list(self.passes), graph, ctx,
                                                        verifier if self.verify else None)
        finally:
            ctx.stage = stage
        if outputs is not None:
            verifier.accept(outputs)
        self.outputs = outputs  # the result's answers on the verifier's sets; None: not checked (unchanged)
        for record in records:
            log.info("%s: %s %s", record.name, record.status, record.reason or record.stats)
        self.records = records
        return graph, records

    def __call__(self, graph, ctx: PassContext) -> PassResult:
        """As a pass inside another manager: rewrite ``graph`` in place (its records stay on
        :attr:`records`)."""
        result, records = self.run(graph, ctx)
        if result is not graph:
            self.kind.adopt(graph, result)
        fired = [r.name for r in records if r.status == FIRED]
        return PassResult(modified=bool(fired), stats={"fired": len(fired)})

    def _run_checked(self, passes: list[Pass], graph, ctx: PassContext, verifier):
        """Apply ``passes`` in order, then check the result once; returns (graph, records, its
        outputs on the verifier's sets, or None when nothing was checked).

        One check per stage, not one per pass: a check runs the whole model on every input set,
        and most passes are right. When the check fails, bisection over the graphs the passes
        left finds the first one that is wrong (the one before it is right): that pass is rolled
        back, and the passes after it are applied again to the graph before it, and checked the
        same way. Every kept graph is thus checked against the references as given, on every set,
        and a wrong pass costs about log2(passes fired) extra checks.
        """
        chain, fired, marks, records = [graph], [], [], []
        for index, pass_ in enumerate(passes):
            self.on_progress(f"{self.stage} pass {index + 1}/{len(passes)}: {pass_.name}")
            marks.append(len(ctx.refusals))
            result, record = self._apply(pass_, chain[-1], ctx)
            records.append(record)
            if record.status == FIRED:
                chain.append(result)
                fired.append(index)
        if verifier is None or not fired:
            return chain[-1], records, None
        self.on_progress(f"verifying the {self.stage} stage ({len(fired)} passes fired)")
        why, comparison, outputs = self._check(verifier, chain, len(chain) - 1)
        if why is None:
            records[fired[-1]].max_abs_error = comparison.max_abs_error
            return chain[-1], records, outputs
        good, wrong, good_outputs = 0, len(chain) - 1, None  # chain[0], the graph given, is right
        while wrong - good > 1:
            middle = (good + wrong) // 2
            middle_why, comparison, outputs = self._check(verifier, chain, middle)
            if middle_why is None:
                good, good_outputs = middle, outputs
                records[fired[middle - 1]].max_abs_error = comparison.max_abs_error
            else:
                wrong, why = middle, middle_why
        culprit = fired[wrong - 1]  # chain[wrong] is its graph, chain[good] the one it was given
        record = records[culprit]
        record.status, record.reason, record.nodes_after = ROLLED_BACK, why, record.nodes_before
        log.warning("pass %s %s and was rolled back", record.name, why)
        if culprit + 1 < len(passes):  # what the passes after it refused is refused again below
            del ctx.refusals[marks[culprit + 1]:]
        result, rest, outputs = self._run_checked(passes[culprit + 1:], chain[good], ctx, verifier)
        return result, records[:culprit + 1] + rest, outputs if outputs is not None else good_outputs

    def _check(self, verifier, chain: list, index: int):
        """(why chain[index] is wrong, or None; its comparison; its outputs). While it runs, the
        graph may not write into a weight that any graph before it holds."""
        with self.kind.guard_all(chain[:index]):
            try:
                comparison, outputs = verifier.check(chain[index])
            except Exception as exc:
                return f"made a graph that raised {first_line(exc)}", None, None
        if not comparison.ok:
            return f"changed the outputs: {comparison.message}", comparison, outputs
        return None, comparison, outputs

    def _apply(self, pass_: Pass, graph, ctx: PassContext):
        """(the pass's graph, its record): the pass on a copy of ``graph``, validated, unchecked."""
        before = self.kind.count(graph)
        record = PassRecord(pass_.name, UNCHANGED, nodes_before=before, nodes_after=before, stage=self.stage)
        candidate = self.kind.copy(graph)
        ctx.current_pass = pass_.name
        start = time.perf_counter()
        try:
            with self.kind.guard(graph):
                result = pass_(candidate, ctx)
            record.stats = dict(result.stats)
            if not result.modified:
                return graph, record
            self.kind.validate(candidate)
        except PassContractError as exc:
            record.status, record.reason = FAILED, str(exc)
            log.warning("accelc: pass %s broke the pass contract and was left out: %s", pass_.name, exc)
            return graph, record
        except Exception as exc:  # a broken plugin must not take the compilation down with it
            log.debug("pass %s raised", pass_.name, exc_info=True)
            record.status, record.reason = FAILED, f"raised {first_line(exc)}"
            return graph, record
        finally:
            record.seconds = time.perf_counter() - start
            ctx.current_pass = ""
        record.status, record.nodes_after = FIRED, self.kind.count(candidate)
        return candidate, record


__all__ = ["PassManager", "PassRecord", "copy_graph_module", "FIRED", "UNCHANGED", "ROLLED_BACK", "FAILED", "STATUSES"]
