"""Build the OpenVINO runtime of an optimised graph: its ONNX export, read by OpenVINO.

    gm (the graph stage's output, fp32) ─export─► ONNX ─OpenVINO's ONNX frontend─► ov.Model ─► OpenVinoRuntime
                                                                 (saved as model.xml/.bin when asked)

OpenVINO converts the plain export: the onnx stage's passes are ONNX Runtime's (its contrib ops,
its kernels' quirks) and OpenVINO's own transformations fuse attention, GELU and layer norms on
the standard ops. The named dynamic axes of the export (``batch``, ``seq``, ...) become dynamic
dimensions of the model, so the runtime and the saved ``model.xml`` take every size the export does.

Why from ONNX rather than ``convert_model`` on a ``torch.export`` program: the ONNX route keeps
the static sizes static (the ExportedProgram route marks every dimension of an input dynamic,
measured on OpenVINO 2026.4), and with ``backend="auto"`` the export is the one ONNX Runtime's
build makes anyway (:func:`accelc.onnx.build.export_for_runtimes`). ONNX Runtime's OpenVINO
execution provider is a third route; it ships in a separate ``onnxruntime-openvino`` wheel that
replaces ``onnxruntime``, so accelc does not use it.

bf16 is OpenVINO's own lowering (``INFERENCE_PRECISION_HINT``) of the fp32 graph: handed a graph
with accelc's bf16 casts it would stack its own on them; handed the fp32 graph it keeps its
normalisations and softmax accumulations in f32.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..background import Background
from ..runtime.openvino import OpenVinoRuntime, openvino_reason, shared_core
from .build import cpu_values, export_for_runtimes, on_cpu, runtime_meta
from .export import OnnxExport
from .weights_apart import MODEL_NAME, WeightsApart, weights_apart


class OpenVinoBuildError(RuntimeError):
    """OpenVINO could not convert or compile the model; the message is one line."""


def build_openvino_runtime(gm: torch.fx.GraphModule, example_inputs: tuple, precision: str, *, dynamic_shapes=None,
                           exported: OnnxExport | None = None, reference: list | None = None,
                           threads: int | None = None) -> tuple[OpenVinoRuntime, dict]:
    """``gm`` (fp32) as an :class:`OpenVinoRuntime` running at ``precision`` ("fp32" | "bf16");
    returns the runtime and its report section. ``exported`` is ``gm``'s export when the caller
    has it; otherwise it is made here with ``dynamic_shapes``. ``reference`` is ``gm``'s flat
    outputs on the example, when the caller has them (else ``gm`` runs once here). The runtime is not checked here:
    the caller checks it against eager, as it checks every runtime. It owns its temporary folder
    (the ONNX files OpenVINO maps the weights from); ``runtime.close()`` removes it now."""
    return start_openvino_build(gm, example_inputs, precision, dynamic_shapes=dynamic_shapes, exported=exported,
                                reference=reference, threads=threads, background=False).result()


def start_openvino_build(gm: torch.fx.GraphModule, example_inputs: tuple, precision: str, *, dynamic_shapes=None,
                         exported: OnnxExport | None = None, reference: list | None = None,
                         threads: int | None = None, background: bool = True) -> Background:
    """:func:`build_openvino_runtime` as a :class:`accelc.background.Background` whose result is
    (runtime, section), with OpenVINO's own work (writing and reading the ONNX model,
    compiling it: C++ that releases the GIL) on a thread when ``background``, so that the
    caller can build ONNX Runtime meanwhile (GPT-2: 4-5 s of OpenVINO's work under the onnx
    stage's Python passes). What reads the caller's state (the export, its graph serialised apart
    from its weights, the thread count) is done here, before the thread starts; the thread touches no stdout or warning
    filter of the process's."""
    start = time.perf_counter()
    inputs = cpu_values(example_inputs)
    gm = on_cpu(gm)
    if exported is None:
        exported = export_for_runtimes(gm, inputs, dynamic_shapes)
        if exported is None:
            raise OpenVinoBuildError("some ops of the graph have no ONNX form, which OpenVINO converts from")
    if reference is None:
        with torch.inference_mode():
            reference = pytree.tree_leaves(gm(*inputs))
    meta = runtime_meta(gm, exported, inputs, reference, precision)
    threads = int(threads or torch.get_num_threads())
    # The graph apart from its weights (accelc.onnx.weights_apart): the thread writes them as
    # files for OpenVINO's ONNX frontend, where serialising the whole model here held the GIL.
    apart = weights_apart(exported.ir_model)
    workdir = tempfile.mkdtemp(prefix="accelc-openvino-")

    def work() -> tuple[OpenVinoRuntime, dict]:
        try:
            convert_start = time.perf_counter()
            try:
                model = _read(apart, workdir)
            except Exception as exc:
                raise OpenVinoBuildError(f"convert_model: {openvino_reason(exc)}") from exc
            convert_s = time.perf_counter() - convert_start
            compile_start = time.perf_counter()
            try:
                runtime = OpenVinoRuntime(model, meta, threads=threads, owned_dir=workdir)
            except Exception as exc:
                raise OpenVinoBuildError(f"compile_model: {openvino_reason(exc)}") from exc
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        section = {
            "route": "ONNX export -> OpenVINO ONNX frontend (read_model) -> CPU plugin",
            "export": exported.as_dict(),
            "settings": runtime.settings,
            "convert_s": round(convert_s, 3),
            "compile_s": round(time.perf_counter() - compile_start, 3),
            "seconds": round(time.perf_counter() - start, 3),
        }
        if precision == "bf16" and runtime.inference_precision != "bf16":
            section["note"] = (f"this CPU has no native bf16 (AVX512_BF16 or AMX): OpenVINO runs "
                               f"{runtime.inference_precision}")
        return runtime, section

    return Background(work, "accelc-openvino-build", on_thread=background)


def _read(apart: WeightsApart, workdir: str):
    """The ONNX model, written to ``workdir`` (model.onnx and its weights) and read by OpenVINO's
    ONNX frontend, which maps the weights from model.onnx.data rather than copying them: the
    files stay in ``workdir`` (the runtime's) while the model lives. The CPU plugin compiles it as
    fast as the IR it was once saved as first, and the IR is not written (GPT-2: 0.51-0.54 s
    against 0.54-0.73 s, and 2.2 s less for saving the IR, which :meth:`OpenVinoRuntime.save`
    writes when asked; benchmarks/probe_openvino_read.py)."""
    path = os.path.join(workdir, MODEL_NAME)
    apart.write(path)
    return shared_core().read_model(path)


def openvino_available() -> str | None:
    """None when OpenVINO imports and its CPU plugin loads; else why not, in one line."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        from ..runtime.openvino import INSTALL_HINT

        return f"openvino is not installed ({INSTALL_HINT})"
    try:
        shared_core().get_property("CPU", "FULL_DEVICE_NAME")
    except Exception as exc:
        return f"OpenVINO's CPU plugin does not load ({openvino_reason(exc)})"
    return None


__all__ = ["build_openvino_runtime", "start_openvino_build", "openvino_available", "OpenVinoBuildError"]
