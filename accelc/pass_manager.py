"""Runs an ordered list of passes with a lint and a numeric check after each one.

For every pass the manager:
1. copies the graph (nodes are copied; weight tensors are shared, passes never edit them in place),
2. runs the pass on the copy,
3. lints the copy and recompiles it,
4. with verification on, runs the copy on fixed seeded inputs and compares with the graph before
   the pass (dtype-aware tolerances, :mod:`accelc.verify`),
5. keeps the copy, or throws it away and records why: a pass that raises, breaks the graph or
   changes the answer is rolled back and named in the report, and the pipeline goes on.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.fx

from .capture import count_compute_nodes
from .pass_base import Pass, PassContext
from .source import first_line
from .verify import Verifier, tolerance_for_precision

log = logging.getLogger(__name__)

FIRED, UNCHANGED, ROLLED_BACK, FAILED = "fired", "no change", "rolled back", "failed"


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


class PassManager:
    """Applies passes in order; see the module docstring for what happens around each one."""

    def __init__(self, passes: list[Pass], verify: bool = True, on_progress: Callable[[str], None] | None = None):
        self.passes = passes
        self.verify = verify
        self.on_progress = on_progress or (lambda message: None)

    def run(
        self, gm: torch.fx.GraphModule, ctx: PassContext, verifier: Verifier | None = None
    ) -> tuple[torch.fx.GraphModule, list[PassRecord]]:
        if self.verify and verifier is None:
            verifier = Verifier.for_module(gm, ctx.example_inputs)
            verifier.tolerance_of = tolerance_for_precision(ctx.precision)  # lowering on purpose is judged by its dtype
        records = []
        for index, pass_ in enumerate(self.passes):
            self.on_progress(f"pass {index + 1}/{len(self.passes)}: {pass_.name}")
            gm, record = self._run_one(pass_, gm, ctx, verifier if self.verify else None)
            records.append(record)
            log.info("%s: %s %s", record.name, record.status, record.reason or record.stats)
        return gm, records

    def _run_one(self, pass_: Pass, gm, ctx: PassContext, verifier: Verifier | None):
        before = count_compute_nodes(gm)
        record = PassRecord(pass_.name, UNCHANGED, nodes_before=before, nodes_after=before)
        candidate = copy_graph_module(gm)
        ctx.current_pass = pass_.name
        start = time.perf_counter()
        try:
            result = pass_(candidate, ctx)
            record.stats = dict(result.stats)
            if not result.modified:
                return gm, record
            candidate.graph.lint()
            candidate.recompile()
        except Exception as exc:  # a broken plugin must not take the compilation down with it
            log.debug("pass %s raised", pass_.name, exc_info=True)
            record.status, record.reason = FAILED, f"raised {first_line(exc)}"
            return gm, record
        finally:
            record.seconds = time.perf_counter() - start
            ctx.current_pass = ""
        if verifier is not None:
            self.on_progress(f"verifying {pass_.name}")
            try:
                comparison, outputs = verifier.check(candidate)
            except Exception as exc:
                record.status, record.reason = ROLLED_BACK, f"rewritten graph raised {first_line(exc)}"
                return gm, record
            record.max_abs_error = comparison.max_abs_error
            if not comparison.ok:
                record.status, record.reason = ROLLED_BACK, f"changed the outputs: {comparison.message}"
                log.warning("pass %s changed the model's outputs and was rolled back: %s", pass_.name, comparison.message)
                return gm, record
            verifier.accept(outputs)
        record.status, record.nodes_after = FIRED, count_compute_nodes(candidate)
        return candidate, record
