"""Build the ONNX Runtime runtime of an optimised graph: export, the onnx stage, a session.

    gm ─export─► ONNX ─onnx stage (verified in ORT)─► model.onnx ─► OrtRuntime
     └─ an op ONNX cannot express ─► partial export: each exportable region built so, inside a GraphModule

The model's dynamic sizes are the graph's: :func:`build_onnx_runtime` takes torch.export's
``dynamic_shapes`` spec for the inputs, and ``cases`` (inputs and reference outputs, at the
example and at other sizes) on which the onnx stage is checked. The runtime itself is not
checked here: the caller checks it against eager, as it checks every runtime.

Every file of a build (a TorchScript export, model.onnx and model.onnx.data, TensorRT's cache) lives
in one temporary folder that the returned module owns: it goes when the module is closed or
garbage-collected.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
import weakref

import onnx_ir as ir
import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..pass_base import Pass, PassContext
from ..runtime.onnxruntime import MODEL_FILE, OrtRuntime
from .export import OnnxExport, PendingWrite, export_graph, torchscript_input_names
from .optimize import optimize_onnx
from .weights_apart import WeightsApart
from .partial import build_partial, unexportable_nodes


def build_onnx_runtime(gm: torch.fx.GraphModule, example_inputs: tuple, device, ctx: PassContext, passes: list[Pass], *,
                       dynamic_shapes=None, cases: list[tuple[tuple, list[torch.Tensor]]] | None = None,
                       on_progress=None, exported: OnnxExport | None = None) -> tuple[torch.nn.Module, dict]:
    """Export ``gm``, run the onnx stage's ``passes`` (verified in ORT), open a session;
    return the runtime and its report section.

    ``ctx`` is the compilation's context: ``ctx.precision`` is the precision, and what the ONNX
    passes refuse joins ``ctx.refusals`` (stage "onnx"). ``dynamic_shapes`` is torch.export's
    spec for ``example_inputs`` (None: static). ``cases`` are (inputs, flat reference outputs)
    pairs, the example first, then inputs at other sizes (eager's answers, computed once by the
    caller); without them the references are ``gm``'s outputs on the example. A case the
    exported model cannot take (the export fell back to static shapes) is left out, and the
    report's "probes" says so.

    The module is an :class:`OrtRuntime`, or, when some op cannot be exported (report["partial"]),
    a ``torch.fx.GraphModule`` whose exportable regions are OrtRuntime submodules; each region
    is checked on what it receives at every case's inputs, against PyTorch's answers for that
    region there. Either module owns the build's temporary folder; ``module.close()`` removes
    it now.

    ``exported`` is ``gm``'s export when the caller already has it (:func:`export_for_runtimes`,
    shared with the OpenVINO runtime); the onnx stage never changes it.
    """
    start = time.perf_counter()
    device = torch.device(device)
    workdir = tempfile.mkdtemp(prefix="accelc-onnx-")
    try:
        unsupported = [] if exported is not None else unexportable_nodes(gm)
        if unsupported:
            probe_inputs = [inputs for inputs, _ in (cases or [])[1:]]
            module, report = build_partial(gm, example_inputs, device, ctx, passes, workdir, unsupported, _build_exported,
                                           dynamic_shapes=dynamic_shapes, probe_inputs=probe_inputs,
                                           on_progress=on_progress)
            # The regions' runtimes own nothing: the folder holding all of them is the module's.
            module.close = weakref.finalize(module, shutil.rmtree, workdir, ignore_errors=True)
        else:
            module, report = _build_exported(gm, example_inputs, device, ctx, passes, workdir, dynamic_shapes=dynamic_shapes,
                                             cases=cases, on_progress=on_progress, owned=True, exported=exported)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    report["seconds"] = round(time.perf_counter() - start, 3)
    return module, report


def export_for_runtimes(gm: torch.fx.GraphModule, example_inputs: tuple, dynamic_shapes=None) -> OnnxExport | None:
    """``gm``'s ONNX export, for the runtimes that start from one (ONNX Runtime's onnx stage and
    OpenVINO), so that a build of both exports once; None when some op cannot be exported (ONNX
    Runtime then builds a partial export, :func:`build_onnx_runtime`). Raises
    :class:`accelc.onnx.export.OnnxExportError` when the export fails."""
    if unexportable_nodes(gm):
        return None
    with tempfile.TemporaryDirectory(prefix="accelc-export-") as workdir:
        return export_graph(on_cpu(gm), cpu_values(example_inputs), workdir, dynamic_shapes=dynamic_shapes)


def runtime_meta(gm: torch.fx.GraphModule, exported: OnnxExport, example_inputs: tuple, flat_ref: list,
                 precision: str) -> dict:
    """What a runtime of ``exported`` needs beside the model file (saved as its JSON): forward()'s
    argument names, the output structure and shapes, the named dynamic axes, the precision, and
    the example's sizes per ONNX input (what ONNX Runtime's CPU session is pinned to)."""
    meta = {
        "arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"],
        "out_spec": pytree.treespec_dumps(_output_spec(gm)),
        "output_shapes": [list(t.shape) for t in flat_ref],
        "dynamic_axes": {name: {str(d): s for d, s in axes.items()} for name, axes in exported.dynamic_axes.items()},
        "precision": precision,
        "exporter": exported.exporter,
    }
    if exported.exporter == "torchscript":
        meta["arg_names"] = torchscript_input_names(len(example_inputs))
    # Keyed by the ONNX input names, matched to forward()'s arguments as the runtimes match them.
    onnx_inputs = [i.name for i in exported.ir_model.graph.inputs]
    positions = [meta["arg_names"].index(n) if n in meta["arg_names"] else k for k, n in enumerate(onnx_inputs)]
    meta["example_shapes"] = {n: list(example_inputs[k].shape) for n, k in zip(onnx_inputs, positions)
                              if k < len(example_inputs) and isinstance(example_inputs[k], torch.Tensor)}
    return meta


def on_cpu(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` with its weights on the CPU, where the exporters trace. A copy when they are not:
    moving gm would move the weights it shares with the graph the PyTorch runtime runs (and with
    the user's model)."""
    if any(t.device.type != "cpu" for t in [*gm.parameters(), *gm.buffers()]):
        return copy.deepcopy(gm).to("cpu")
    return gm


def _build_exported(gm: torch.fx.GraphModule, example_inputs: tuple, device: torch.device, ctx: PassContext,
                    passes: list[Pass], workdir: str, *, dynamic_shapes=None, cases=None, on_progress=None,
                    owned: bool = False, exported: OnnxExport | None = None) -> tuple[OrtRuntime, dict]:
    """One exported graph as an OrtRuntime, built in ``workdir`` (which it owns if ``owned``)."""
    start = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    inputs = cpu_values(example_inputs)
    gm = on_cpu(gm)
    if cases is None:
        with torch.inference_mode():
            cases = [(inputs, pytree.tree_leaves(gm(*inputs)))]
    flat_ref = cases[0][1]
    if exported is None:
        exported = export_graph(gm, inputs, workdir, dynamic_shapes=dynamic_shapes)
    meta = runtime_meta(gm, exported, inputs, flat_ref, ctx.precision)
    checked = [(inputs, cpu_values(flat_ref))]
    skipped = 0
    for probe, reference in cases[1:]:
        probe = cpu_values(probe)
        if accepts(exported.ir_model, meta["arg_names"], probe):
            checked.append((probe, cpu_values(reference)))
        else:
            skipped += 1
    path = os.path.join(workdir, MODEL_FILE)
    # On the CPU the stage's check runs its result in the runtime that will serve it, which is
    # then this build's (no second session); on CUDA the check's CPU sessions are not the runtime's.
    serving = ((lambda apart: OrtRuntime(path, device, meta, ctx.precision, model_in_memory=apart, open_dynamic=True))
               if device.type == "cpu" else None)
    stage = optimize_onnx(exported.ir_model, checked, meta, ctx, passes, on_progress=on_progress, open_runtime=serving)
    records = stage.records
    pending = _write_model(stage.model, path, device)
    if stage.runtime is not None:
        runtime = stage.runtime
        runtime.attach_file(pending, workdir if owned else None)
        if not skipped:  # its answers on every case, in their order: the caller's check compares them
            runtime.checked_answers = stage.answers
    else:
        runtime = OrtRuntime(path, device, meta, ctx.precision, owned_dir=workdir if owned else None,
                             model_in_memory=stage.model if pending is not None else None, pending_write=pending)
    meta["disabled_fusions"] = runtime.providers["disabled_fusions"]  # saved in meta.json for plain-ORT users
    report = {
        "export": exported.as_dict(),
        "opset": exported.opset,
        "providers": runtime.providers,
        "onnx_passes": [r.as_dict() for r in records],
        "nodes": {"exported": exported.ir_model.graph.num_nodes(), "optimised": len(stage.model.proto.graph.node)},
        "probes": {"checked": len(checked) - 1, "skipped": skipped,
                   **({"why_skipped": "the ONNX model has static shapes (see export.attempts)"} if skipped else {})},
        "seconds": round(time.perf_counter() - start, 3),
    }
    return runtime, report


def _write_model(model: WeightsApart, path: str, device: torch.device) -> PendingWrite | None:
    """Write ``model`` to ``path`` (model.onnx, its weights in model.onnx.data beside it). On the
    CPU the files are written on a thread while the session opens from memory (the write is
    returned); for the GPU providers (TensorRT's caches key on the file) they are written first,
    and None."""
    if device.type != "cpu":
        model.write(path)
        return None
    return PendingWrite(path, model)


def _output_spec(gm: torch.fx.GraphModule) -> pytree.TreeSpec:
    """The structure ``gm`` returns its outputs in, read from the graph rather than from a run."""
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is not None and info.out_spec is not None:
        return info.out_spec  # torch.export's codegen rebuilds this container around the output node's leaves
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    return pytree.tree_structure(output.args[0])


def cpu_values(values) -> tuple:
    """``values`` (inputs or flat outputs) with every tensor on the CPU, where the ORT checks run."""
    return tuple(x.to("cpu") if isinstance(x, torch.Tensor) else x for x in values)


def accepts(model: ir.Model, arg_names: list[str], inputs: tuple) -> bool:
    """Whether ``inputs`` fit the fixed sizes of ``model``'s inputs (a static export takes the example only)."""
    for k, value in enumerate(model.graph.inputs):
        index = arg_names.index(value.name) if value.name in arg_names else k
        x = inputs[index] if index < len(inputs) else None
        if not isinstance(x, torch.Tensor):
            continue
        dims = list(value.shape or ())
        if len(dims) != x.dim() or any(isinstance(d, int) and d != n for d, n in zip(dims, x.shape)):
            return False
    return True


__all__ = ["build_onnx_runtime", "export_for_runtimes", "runtime_meta", "accepts"]
