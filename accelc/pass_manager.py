"""Runs an ordered list of passes, of either IR, with a check after each one.

For every pass the manager:
1. copies the graph (fx: nodes copied, weight tensors shared; ONNX: the whole model),
2. runs the pass on the copy; on fx graphs, any write into an existing weight tensor is stopped
   where it happens (:class:`accelc.contract.WeightWriteGuard`): those tensors are shared with
   the graph before the pass and with the user's model, so the pass is failed and named and
   nothing it touched is kept,
3. validates the copy (fx: lint and recompile),
4. with a verifier, runs the copy on its input sets and compares with the graph before the pass
   (dtype-aware tolerances, :mod:`accelc.verify`),
5. keeps the copy, or throws it away and records why: a pass that raises, breaks the graph or
   changes the answer is rolled back or failed and named in the report, and the pipeline goes on.

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
        import onnx_ir as ir

        return ir.serde.deserialize_model(ir.serde.serialize_model(model))

    def validate(self, model) -> None:
        pass  # serialisation (in the verifier, and at save) is the check the ONNX IR has

    def count(self, model) -> int:
        return sum(1 for _ in model.graph.all_nodes())

    def guard(self, model):
        return contextlib.nullcontext()  # each pass edits its own deserialised copy

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
        records = []
        stage, ctx.stage = ctx.stage, self.stage
        try:
            for index, pass_ in enumerate(self.passes):
                self.on_progress(f"{self.stage} pass {index + 1}/{len(self.passes)}: {pass_.name}")
                graph, record = self._run_one(pass_, graph, ctx, verifier if self.verify else None)
                records.append(record)
                log.info("%s: %s %s", record.name, record.status, record.reason or record.stats)
        finally:
            ctx.stage = stage
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

    def _run_one(self, pass_: Pass, graph, ctx: PassContext, verifier):
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
        if verifier is not None:
            self.on_progress(f"verifying {pass_.name}")
            try:
                with self.kind.guard(graph):  # the rewritten graph may not write into weights either
                    comparison, outputs = verifier.check(candidate)
            except Exception as exc:
                record.status, record.reason = ROLLED_BACK, f"rewritten graph raised {first_line(exc)}"
                return graph, record
            record.max_abs_error = comparison.max_abs_error
            if not comparison.ok:
                record.status, record.reason = ROLLED_BACK, f"changed the outputs: {comparison.message}"
                log.warning("pass %s changed the model's outputs and was rolled back: %s", pass_.name, comparison.message)
                return graph, record
            verifier.accept(outputs)
        record.status, record.nodes_after = FIRED, self.kind.count(candidate)
        return candidate, record


__all__ = ["PassManager", "PassRecord", "copy_graph_module", "FIRED", "UNCHANGED", "ROLLED_BACK", "FAILED", "STATUSES"]
