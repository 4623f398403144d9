"""Export an optimised ATen-level ``fx.GraphModule`` to ONNX.

    gm ─torch.export (non-strict, dim 0 dynamic)─► ExportedProgram ─torch.onnx (dynamo)─► ONNX
     └─ dynamo exporter fails ─► torch.onnx TorchScript exporter on the graph module, reason kept

The batch dimension (dim 0 of every tensor input) is exported as dynamic where the model allows
it. A graph captured at batch 1 has the 1 written into its views (every transformer does); the
caller can then supply the same optimised graph from a symbolic-batch capture, which is tried
next. Only when that fails too is the export redone with static shapes, and the record says
why. ``static=True`` pins every shape from the start.
Models whose weights exceed 2 GB are saved with external data (protobuf's 2 GB limit).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import onnx
import torch
import torch.fx

from ..capture import batch_dynamic_shapes, double_batch
from ..errors import AccelcError
from ..source import first_line

log = logging.getLogger(__name__)

OPSET = 20  # Gelu is an operator from opset 20 on; lower opsets spell it with Erf
TWO_GB = 2 * 1024**3


class OnnxExportError(AccelcError):
    """Neither ONNX exporter could export the graph."""


@dataclass
class OnnxExport:
    """An exported model and how it came to be."""

    model: onnx.ModelProto
    exporter: str  # "dynamo" | "torchscript"
    dynamic_batch: bool
    input_names: list[str]
    output_names: list[str]
    opset: int
    seconds: float
    attempts: list[str] = field(default_factory=list)
    recaptured: bool = False  # exported from the dynamic-batch re-capture, not the graph given

    def as_dict(self) -> dict:
        return {
            "exporter": self.exporter, "dynamic_batch": self.dynamic_batch, "opset": self.opset,
            "recaptured_for_dynamic_batch": self.recaptured,
            "seconds": round(self.seconds, 3), "attempts": self.attempts,
            "inputs": self.input_names, "outputs": self.output_names,
        }


def _has_dynamic_batch(model: onnx.ModelProto) -> bool:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            return True
    return False


def _dynamo_export(gm: torch.fx.GraphModule, inputs: tuple, static: bool, opset: int) -> onnx.ModelProto:
    dynamic = None if static else batch_dynamic_shapes(inputs)
    if dynamic is not None:
        inputs = double_batch(inputs)  # the caller verifies at batch 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(gm, tuple(inputs), dynamic_shapes=dynamic, strict=False)
        onnx_program = torch.onnx.export(program, tuple(inputs), dynamo=True, opset_version=opset, optimize=True, verbose=False)
    return onnx_program.model_proto


class _Traceable(torch.nn.Module):
    """Holds the graph module for the TorchScript exporter.

    The exporter switches its model to eval mode; a module that came out of ``torch.export``
    refuses ``train()``, so this wrapper answers the switch itself and leaves the graph alone.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def train(self, mode: bool = True):
        return self

    def forward(self, *args):
        return self.gm(*args)


def _torchscript_export(gm: torch.fx.GraphModule, inputs: tuple, static: bool, opset: int, workdir: str) -> onnx.ModelProto:
    names = [f"input_{i}" for i in range(len(inputs))]
    axes = None if static else {n: {0: "batch"} for n, x in zip(names, inputs) if isinstance(x, torch.Tensor) and x.dim() > 0}
    path = os.path.join(workdir, "torchscript_export.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Traceable(gm), tuple(inputs), path, dynamo=False, opset_version=opset, input_names=names, dynamic_axes=axes)
    return onnx.load(path)


def export_graph(
    gm: torch.fx.GraphModule, inputs: tuple, workdir: str, static: bool = False, opset: int = OPSET,
    dynamic_graph: Callable[[], torch.fx.GraphModule | None] | None = None,
) -> OnnxExport:
    """Export ``gm`` on ``inputs``; raises :class:`OnnxExportError` only when both exporters fail.

    A graph captured at one batch size has that size written into its views; ``dynamic_graph``,
    when given, builds the same optimised graph from a dynamic-batch capture, and is called only
    if ``gm`` itself will not export with a dynamic batch.
    """
    os.makedirs(workdir, exist_ok=True)
    attempts: list[str] = []
    start = time.perf_counter()
    tries = [("gm", False)] if static else [("gm", False), ("recaptured", False), ("gm", True)]
    for source, pinned in tries:
        label = "dynamo (static shapes)" if (static or pinned) else "dynamo (dynamic batch)"
        graph = gm
        if source == "recaptured":
            graph = dynamic_graph() if dynamic_graph is not None else None
            if graph is None:
                continue
            label = "dynamo (dynamic batch, graph re-captured with a symbolic batch)"
        try:
            model = _dynamo_export(graph, inputs, static or pinned, opset)
            export = _result(model, "dynamo", start, attempts, opset)
            export.recaptured = source == "recaptured"
            return export
        except Exception as exc:  # the exporters raise many types; each means "try the next way"
            attempts.append(f"{label}: {first_line(exc)}")
            log.debug("ONNX export %s failed", label, exc_info=True)
    try:
        model = _torchscript_export(gm, inputs, static, opset, workdir)
        return _result(model, "torchscript", start, attempts, opset)
    except Exception as exc:
        attempts.append(f"torchscript: {first_line(exc)}")
        log.debug("ONNX export torchscript failed", exc_info=True)
    raise OnnxExportError("could not export the graph to ONNX: " + "; ".join(attempts))


def _result(model: onnx.ModelProto, exporter: str, start: float, attempts: list[str], opset: int) -> OnnxExport:
    return OnnxExport(
        model=model, exporter=exporter, dynamic_batch=_has_dynamic_batch(model),
        input_names=[v.name for v in model.graph.input], output_names=[v.name for v in model.graph.output],
        opset=opset, seconds=time.perf_counter() - start, attempts=attempts,
    )


def save_model(model: onnx.ModelProto, path: str) -> None:
    """Write ``model`` to ``path``; weights go to ``<name>.data`` beside it above 2 GB."""
    big = model.ByteSize() > TWO_GB if _fits_protobuf(model) else True
    if big:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)


def _fits_protobuf(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # ByteSize itself fails past protobuf's limit
        return False


__all__ = ["export_graph", "save_model", "OnnxExport", "OnnxExportError", "OPSET"]
