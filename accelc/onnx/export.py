"""Export an optimised ATen-level ``fx.GraphModule`` to ONNX, with the sizes it was captured with as dynamic.

    gm ─torch.export (non-strict, the caller's dynamic_shapes)─► ExportedProgram ─torch.onnx (dynamo, accelc.onnx.translate)─► ONNX
     └─ dynamo exporter fails ─► torch.onnx TorchScript exporter on the graph module (dynamic_axes), reason kept
         └─ both fail with dynamic sizes ─► the same two with static shapes, reasons kept

``dynamic_shapes`` is torch.export's spec for the inputs: per input None or ``{dim: Dim}``, one
``torch.export.Dim`` object per size that several dims share ("batch", "seq", "height", ...).
The graph must already be shape-generic along those dims (captured with the same spec); the
export only carries that through. In the ONNX model each dynamic dim is a ``dim_param`` named
after its ``Dim`` (the dynamo exporter itself writes torch's symbol names, ``s18``, ``s41``, and
expressions of them such as ``s18*s41`` on intermediate values; they are renamed in every shape
annotation). ``None`` exports every shape static.

torch.export specialises sizes 0 and 1, so an example whose dynamic dim is 1 is grown first (the
tensor repeated along that dim); the caller verifies size 1 itself.

The export is an ``onnx_ir`` model whose weights are the graph module's own tensors, seen as
read-only numpy arrays: nothing is serialised or copied here. GPT-2's weights (500 MB) were
serialised into a protobuf, then copied out of it again by every reader (the onnx stage,
OpenVINO's route): fresh memory that, beside OpenVINO's compilation, cost seconds of the build.
The runtimes open and save a model with its weights apart (:mod:`accelc.onnx.weights_apart`);
:attr:`OnnxExport.model` serialises the whole model, for a caller that wants a protobuf.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import onnx
import onnx_ir as ir
import torch
import torch.fx

from ..background import Background
from ..errors import AccelcError
from ..source import first_line
from .translate import export_program

log = logging.getLogger(__name__)

OPSET = 20  # Gelu is an operator from opset 20 on; lower opsets spell it with Erf


class OnnxExportError(AccelcError):
    """Neither ONNX exporter could export the graph."""


@dataclass
class OnnxExport:
    """An exported model and how it came to be."""

    ir_model: ir.Model  # its weights: the graph module's tensors (dynamo), or views of the protobuf read back
    exporter: str  # "dynamo" | "torchscript"
    dynamic_axes: dict[str, dict[int, str]]  # per model input: {dim: dim_param}; empty when static
    input_names: list[str]
    output_names: list[str]
    opset: int
    seconds: float
    attempts: list[str] = field(default_factory=list)

    @property
    def is_static(self) -> bool:
        return not any(self.dynamic_axes.values())

    @cached_property
    def model(self) -> onnx.ModelProto:
        """The whole model as a protobuf, weights included, serialised at the first use (the
        builds read :attr:`ir_model`)."""
        return ir.serde.serialize_model(self.ir_model)

    def as_dict(self) -> dict:
        return {
            "exporter": self.exporter, "opset": self.opset,
            "dynamic_axes": {name: {str(d): s for d, s in axes.items()} for name, axes in self.dynamic_axes.items()},
            "seconds": round(self.seconds, 3), "attempts": self.attempts,
            "inputs": self.input_names, "outputs": self.output_names,
        }


# ── the dynamic_shapes spec ──


def _named(dim) -> str | None:
    """A ``torch.export.Dim``'s name; None for a hint (``Dim.AUTO``, ``Dim.DYNAMIC``), which has none."""
    return None if isinstance(dim, torch.export.dynamic_shapes._DimHint) else getattr(dim, "__name__", None)


def is_dynamic(dynamic_shapes) -> bool:
    return dynamic_shapes is not None and any(axes for axes in dynamic_shapes)


def dim_names(dynamic_shapes) -> list[dict[int, str | None]] | None:
    """Per input ``{dim: name}`` of a torch.export spec (a tuple of None / ``{dim: Dim}``; a hint
    such as ``Dim.AUTO`` has the name None); None when the spec marks nothing dynamic."""
    if not is_dynamic(dynamic_shapes):
        return None
    return [{int(d): _named(dim) for d, dim in (axes or {}).items()} for axes in dynamic_shapes]


def grow_inputs(inputs: tuple, dynamic_shapes) -> tuple:
    """``inputs`` with every dynamic dim (a named ``Dim``) of size 1 repeated to 2: torch.export
    pins sizes 0 and 1. A hint (``Dim.AUTO``) may be tied to other sizes, so it is left as it is."""
    if dynamic_shapes is None:
        return tuple(inputs)
    out = []
    for x, axes in zip(inputs, dynamic_shapes):
        if isinstance(x, torch.Tensor):
            for d, dim in (axes or {}).items():
                if x.shape[d] == 1 and _named(dim) is not None:
                    x = torch.cat([x, x], dim=d)
        out.append(x)
    return tuple(out)


def model_dynamic_axes(model: ir.Model) -> dict[str, dict[int, str]]:
    """Per graph input, its dims that are not fixed sizes: ``{dim: dim_param}`` ("?" when unnamed)."""
    return {value.name: {d: (dim.value or "?") for d, dim in enumerate(value.shape or ()) if not isinstance(dim, int)}
            for value in model.graph.inputs}


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def rename_dim_params(model: ir.Model, arg_names: list[str], names: list[dict[int, str]]) -> dict[str, str]:
    """Rename the exporter's symbols (``s18``) to the spec's dim names ("batch") in every shape
    annotation of ``model``, expressions included (``s18*s41`` ==> ``batch*seq``); returns the mapping.

    ``arg_names[i]`` is the graph input that ``names[i]`` describes; an input the exporter
    dropped (unused) is skipped. A symbol that would get two names keeps its own. Two symbols
    for one name both get it: the export traced with ``Dim.AUTO``, which ties only the sizes the
    graph itself equates, while the spec's one name says they are one size, which accelc's
    signature holds every call to (the named export would have tied them the same way).
    """
    mapping: dict[str, str] = {}
    clashes: set[str] = set()
    position = {name: i for i, name in enumerate(arg_names)}
    for k, value in enumerate(model.graph.inputs):
        i = position.get(value.name, k)
        if i >= len(names):
            continue
        dims = list(value.shape or ())
        for d, wanted in names[i].items():
            if wanted is not None and d < len(dims) and isinstance(dims[d], ir.SymbolicDim) and dims[d].value:
                if mapping.setdefault(dims[d].value, wanted) != wanted:
                    clashes.add(dims[d].value)
    for old in clashes:
        del mapping[old]
    if not mapping:
        return mapping
    rename = lambda text: _SYMBOL.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)  # noqa: E731
    for value in _annotated_values(model):
        shape = value.shape
        if shape is not None and any(isinstance(d, ir.SymbolicDim) and d.value for d in shape):
            value.shape = ir.Shape([ir.SymbolicDim(rename(d.value)) if isinstance(d, ir.SymbolicDim) and d.value else d
                                    for d in shape])
    return mapping


def _annotated_values(model: ir.Model):
    """Every value of ``model`` that may carry a shape: graph inputs and outputs and each node's
    outputs, in the main graph, its subgraphs and its functions."""
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        yield from graph.inputs
        for node in graph.all_nodes():
            yield from node.outputs
        for sub in graph.subgraphs():
            yield from sub.inputs


# ── the two exporters ──


def _placeholder_names(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if n.op == "placeholder"]


def _dynamo_export(gm: torch.fx.GraphModule, inputs: tuple, dynamic_shapes, opset: int) -> ir.Model:
    inputs = grow_inputs(inputs, dynamic_shapes)
    names = dim_names(dynamic_shapes)
    if names is None:
        return _dynamo_export_with(gm, inputs, None, opset, None)
    # Dim.AUTO first, as the capture exported: torch.export checks a named Dim's range strictly,
    # so a guard the capture took for granted (a pooled size that is not 1 at the smallest
    # images) fails the named spec, and every CNN paid a failed trace (1.6 s on ResNet-50) before
    # this one. The names are put back on the ONNX dims below. A spec AUTO cannot keep dynamic
    # gets the named one, whose error then says why.
    try:
        return _dynamo_export_with(gm, inputs, _as_auto(dynamic_shapes), opset, names)
    except Exception:
        log.debug("ONNX export with Dim.AUTO failed; retrying with the named dims", exc_info=True)
        return _dynamo_export_with(gm, inputs, dynamic_shapes, opset, names)


def _dynamo_export_with(gm: torch.fx.GraphModule, inputs: tuple, spec, opset: int,
                        names: list[dict[int, str | None]] | None) -> ir.Model:
    """One dynamo export of ``gm`` on ``inputs`` (grown already) with torch.export's ``spec``; its
    dims renamed to ``names`` and checked to be kept dynamic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(gm, tuple(inputs), dynamic_shapes=spec, strict=False)
        model = export_program(program, tuple(inputs), opset)
    _weights_as_read_only_arrays(model)
    if names is not None:
        rename_dim_params(model, _placeholder_names(gm), names)
        _check_dims_kept(model, _placeholder_names(gm), names)
    return model


def _as_auto(dynamic_shapes):
    """The same dims as ``dynamic_shapes``, each ``Dim.AUTO``."""
    return tuple({d: torch.export.Dim.AUTO for d in axes} if axes else None for axes in dynamic_shapes)


def _weights_as_read_only_arrays(model: ir.Model) -> None:
    """The exporter's weights (torch tensors of the graph module) as read-only numpy views of the
    same memory: no copy, and a pass that tries to write into one raises instead of changing the
    graph module's weights (the pass manager holds numpy-backed weights read-only)."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        raw = getattr(tensor, "raw", None)
        if not isinstance(raw, torch.Tensor) or raw.dtype not in _NUMPY_DTYPES or raw.device.type != "cpu":
            continue
        array = raw.detach().numpy()
        array.flags.writeable = False
        value.const_value = ir.Tensor(array, name=tensor.name, doc_string=tensor.doc_string)


# torch dtypes whose numpy view has the same ONNX type (bfloat16 and the float8s stay torch tensors)
_NUMPY_DTYPES = {torch.float32, torch.float16, torch.float64, torch.int8, torch.uint8, torch.int16, torch.int32,
                 torch.int64, torch.bool}


def _check_dims_kept(model: ir.Model, arg_names: list[str], names: list[dict[int, str | None]]) -> None:
    """Raise when the export fixed a size the spec marks dynamic (the next export try then runs)."""
    axes = model_dynamic_axes(model)
    for arg, wanted in zip(arg_names, names):
        if arg in axes:
            fixed = [d for d in wanted if d not in axes[arg]]
            if fixed:
                raise OnnxExportError(f"the export fixed dims {fixed} of input {arg}, which are dynamic")


class _Traceable(torch.nn.Module):
    """Holds the graph module for the TorchScript exporter.

    The exporter switches its model to eval mode; a module that came out of ``torch.export``
    refuses ``train()``, so this wrapper answers the switch itself and leaves the graph alone.
    ``gm.forward`` is called, not ``gm(...)``: the input-constraint hook ``torch.export`` adds
    cannot run under the tracer.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def train(self, mode: bool = True):
        return self

    def forward(self, *args):
        return self.gm.forward(*args)


def resized_inputs(inputs: tuple, dynamic_shapes) -> tuple:
    """``inputs`` with every named dynamic size one larger (one smaller where that passes its
    ``Dim``'s max), the tensors extended with their own first slice: a second point to check at."""
    sizes: dict[str, int] = {}
    out = []
    for x, axes in zip(inputs, dynamic_shapes):
        if isinstance(x, torch.Tensor):
            for d, dim in (axes or {}).items():
                name = _named(dim)
                if name is None:
                    continue
                n = x.shape[d]
                target = sizes.setdefault(name, n + 1 if n + 1 <= getattr(dim, "max", n + 1) else max(1, n - 1))
                x = torch.cat([x, x.narrow(d, 0, 1)], dim=d) if target > n else x.narrow(d, 0, target)
        out.append(x)
    return tuple(out)


def _bakes_sizes(model: ir.Model, gm: torch.fx.GraphModule, inputs: tuple, dynamic_shapes) -> str | None:
    """Why ``model`` does not follow ``dynamic_shapes`` (wrong or failing at another size), or None.

    The TorchScript tracer records ``aten.sym_size`` calls of a symbolic graph as the example's
    numbers, so its dynamic axes can be names over fixed sizes; this runs the model at one more
    size of each dynamic dim against the graph module."""
    import onnxruntime as ort

    from ..verify import compare_outputs

    other = resized_inputs(grow_inputs(inputs, dynamic_shapes), dynamic_shapes)
    shapes = [tuple(x.shape) for x in other if isinstance(x, torch.Tensor)]
    names = torchscript_input_names(len(other))
    try:
        with torch.no_grad():
            expected = gm(*other)
    except Exception:  # the graph itself refuses that size: nothing to check against
        return None
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a failure here is an answer, not an error to log
        session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        feeds = {v.name: other[names.index(v.name) if v.name in names else k].detach().cpu().numpy()
                 for k, v in enumerate(session.get_inputs())}
        got = session.run(None, feeds)
    except Exception as exc:
        return f"it fails at input shapes {shapes}: {first_line(exc)}"
    check = compare_outputs([torch.from_numpy(g) for g in got], expected)
    return None if check.ok else f"it is wrong at input shapes {shapes}: {check.message}"


def torchscript_input_names(count: int) -> list[str]:
    return [f"input_{i}" for i in range(count)]


def _torchscript_export(gm: torch.fx.GraphModule, inputs: tuple, dynamic_shapes, opset: int, workdir: str) -> ir.Model:
    names = torchscript_input_names(len(inputs))
    dims = dim_names(dynamic_shapes)
    axes = None if dims is None else {
        n: {d: name or f"{n}_dim{d}" for d, name in per.items()} for n, per, x in zip(names, dims, inputs)
        if per and isinstance(x, torch.Tensor)}
    inputs = grow_inputs(inputs, dynamic_shapes)
    path = os.path.join(workdir, "torchscript_export.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Traceable(gm), tuple(inputs), path, dynamo=False, opset_version=opset, input_names=names, dynamic_axes=axes)
    return ir.load(path)


def _describe(dynamic_shapes) -> str:
    names = dim_names(dynamic_shapes)
    if names is None:
        return "static shapes"
    return "dynamic " + ", ".join(dict.fromkeys(n or "auto" for per in names for n in per.values()))


def export_graph(gm: torch.fx.GraphModule, inputs: tuple, workdir: str, dynamic_shapes=None,
                 opset: int = OPSET) -> OnnxExport:
    """Export ``gm`` on ``inputs`` with ``dynamic_shapes`` (torch.export's spec; None: static).

    Tries the dynamo exporter, then the TorchScript one, with the dynamic sizes, then both with
    static shapes; raises :class:`OnnxExportError` only when every try fails. ``attempts`` records
    each failure, so a static result says why it is static.
    """
    os.makedirs(workdir, exist_ok=True)
    attempts: list[str] = []
    start = time.perf_counter()
    if not is_dynamic(dynamic_shapes):
        dynamic_shapes = None
    specs = [dynamic_shapes, None] if dynamic_shapes is not None else [None]
    for spec in specs:
        for exporter in ("dynamo", "torchscript"):
            label = f"{exporter} ({_describe(spec)})"
            try:
                if exporter == "dynamo":
                    model = _dynamo_export(gm, inputs, spec, opset)
                else:
                    model = _torchscript_export(gm, inputs, spec, opset, workdir)
                    baked = _bakes_sizes(model, gm, inputs, spec) if spec is not None else None
                    if baked is not None:
                        raise OnnxExportError(f"the export wrote the example's sizes into the graph: {baked}")
                return _result(model, exporter, start, attempts, opset)
            except Exception as exc:  # the exporters raise many types; each means "try the next way"
                attempts.append(f"{label}: {first_line(exc)}")
                log.debug("ONNX export %s failed", label, exc_info=True)
    raise OnnxExportError("could not export the graph to ONNX: " + "; ".join(attempts))


def _result(model: ir.Model, exporter: str, start: float, attempts: list[str], opset: int) -> OnnxExport:
    axes = {name: dims for name, dims in model_dynamic_axes(model).items() if dims}
    return OnnxExport(
        ir_model=model, exporter=exporter, dynamic_axes=axes,
        input_names=[v.name for v in model.graph.inputs], output_names=[v.name for v in model.graph.outputs],
        opset=opset, seconds=time.perf_counter() - start, attempts=attempts,
    )


class PendingWrite:
    """``model`` (:class:`accelc.onnx.weights_apart.WeightsApart`) being written to ``path``
    (model.onnx and model.onnx.data) on a thread of its own while the build goes on. The files
    are read only later (ONNX Runtime's session for other sizes, ``save()``), after :meth:`wait`;
    the session meanwhile opens from memory. Writing BERT-base's model cost a second of every
    build (the write releases the GIL)."""

    def __init__(self, path: str, model):
        self.path = path
        self._write = Background(lambda: model.write(path), "accelc-model-write")

    def wait(self) -> str:
        """The path, once the files are whole; raises what the write raised."""
        self._write.result()
        return self.path


__all__ = ["export_graph", "PendingWrite", "OnnxExport", "OnnxExportError", "OPSET", "dim_names", "grow_inputs", "is_dynamic",
           "model_dynamic_axes", "rename_dim_params", "torchscript_input_names"]
