"""Capture a model as an ATen-level ``torch.fx.GraphModule`` with ``torch.export``.

Non-strict export first (it runs the Python as Python and traces tensors, so it accepts most
models); strict export (TorchDynamo) as a second try. Parameters and buffers come back as
``get_attr`` nodes, so passes can read and replace them as constants. When both tries fail the
capture records why, with the user's file and line, and the caller keeps the eager model.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx

from .source import exception_location, first_line

log = logging.getLogger(__name__)


@dataclass
class Capture:
    """What capture produced: a graph, or the reason there is none."""

    graph_module: torch.fx.GraphModule | None
    method: str  # "torch.export (non-strict)", "torch.export (strict)", or "eager (not captured)"
    failure: str | None = None
    location: str | None = None
    attempts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.graph_module is not None


def capture(model: torch.nn.Module, inputs: tuple, source_file: str | None = None, dynamic_shapes=None) -> Capture:
    """Export ``model`` on ``inputs``; never raises for an unexportable model.

    ``dynamic_shapes`` is torch.export's spec (``accelc.shapes.auto_dynamic_shapes``): the sizes
    it marks follow the input in every view and reshape instead of being pinned to the example.
    """
    dynamic = dynamic_shapes
    attempts: list[str] = []
    first_exc: BaseException | None = None
    for strict in (False, True):
        label = f"torch.export ({'strict' if strict else 'non-strict'})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(model, tuple(inputs), dynamic_shapes=dynamic, strict=strict)
            return Capture(graph_module_from_program(program), label, attempts=attempts)
        except Exception as exc:  # export raises many types; all mean "could not capture"
            first_exc = first_exc or exc
            attempts.append(f"{label}: {first_line(exc)}")
            log.debug("%s failed", label, exc_info=True)
    assert first_exc is not None
    where = exception_location(first_exc, prefer=source_file)
    return Capture(None, "eager (not captured)", failure=first_line(first_exc), location=where, attempts=attempts)


def graph_module_from_program(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """Unlift an ExportedProgram into a GraphModule whose weights are ``get_attr`` constants.

    The input-shape guard that ``ExportedProgram.module()`` inserts is dropped: the accelerated
    module checks every call against its :class:`accelc.shapes.Signature`, and passes should not
    have to step around it. The graph returns its outputs as a flat tuple; their structure (a
    ``ModelOutput``, a dict...) is kept as data in ``gm.meta["accelc_outputs"]``, and the ranges
    torch.export derived for each size symbol in ``gm.meta["accelc_ranges"]``.
    """
    from .outputs import flatten_graph_outputs

    gm = program.module()
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target.startswith("_guards"):
            gm.graph.erase_node(node)
            if hasattr(gm, node.target):
                delattr(gm, node.target)
    gm.graph.lint()
    gm.recompile()
    gm.meta["accelc_outputs"] = flatten_graph_outputs(gm)
    gm.meta["accelc_ranges"] = {str(symbol): (_bound(r.lower), _bound(r.upper))
                                for symbol, r in program.range_constraints.items()}
    return gm


def _bound(value) -> int | None:
    """A range end as an int, or None for torch's unbounded ``int_oo``."""
    try:
        number = int(value)
    except Exception:  # int_oo and sympy's infinities do not convert
        return None
    return number if abs(number) < 2**62 else None


def count_compute_nodes(gm: torch.fx.GraphModule) -> int:
    """Nodes that do work: calls, not placeholders, constants or the output."""
    return sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module"))
