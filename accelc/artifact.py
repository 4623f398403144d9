"""The artifact folder: written atomically, loaded without unpickling arbitrary objects.

    OUT/
      model.pt2          the optimised graph as a torch.export ExportedProgram
      report.json        what happened (see accelc.api)
      report.html        the same, readable in a browser
      fingerprint.json   accelc / torch / onnxruntime versions, device, python

Everything is written into a temporary sibling folder which is renamed into place at the end,
so a crash or Ctrl-C leaves either the old folder or the complete new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
from contextlib import contextmanager

import torch

from . import __version__
from .cpu import cpu_has_int8_dot_products
from .errors import AccelcFallbackWarning, ArtifactError, NotCapturedError, NotVerifiedError

log = logging.getLogger(__name__)

MODEL_FILE, REPORT_FILE, HTML_FILE, FINGERPRINT_FILE = "model.pt2", "report.json", "report.html", "fingerprint.json"
PLAN_FILE, TRACE_FILE = "plan.json", "pipeline_trace.json"  # only for partitioned runs
REQUIRED_FILES = (MODEL_FILE, REPORT_FILE, FINGERPRINT_FILE)


def fingerprint(device: str) -> dict:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except Exception:  # onnxruntime missing or broken: the fingerprint says so instead of failing
        ort_version = None
    try:
        from importlib.metadata import version

        openvino_version = version("openvino")
    except Exception:  # not installed: an optional backend
        openvino_version = None
    return {
        "accelc": __version__,
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "openvino": openvino_version,
        "python": platform.python_version(),
        "device": device,
        "cuda_device": torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else None,
        "machine": platform.machine(),
    }


def check_output_folder(path: str, force: bool) -> None:
    """Refuse an existing non-empty folder (or a file) unless ``force``; call before doing any work."""
    if os.path.isfile(path):
        raise ArtifactError(f"{path} is a file, not a folder; choose another output path with -o")
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise ArtifactError(f"output folder {path} already exists and is not empty; choose another -o or pass --force to replace it")


def save_artifact(fast, path: str, force: bool = False) -> str:
    """Write ``fast`` (an AcceleratedModule) to ``path``; returns the absolute path."""
    from .report import render_html

    if not fast.captured:
        reason = (fast.report.get("fallback") or "the model was not captured").rstrip(".")
        if (fast.report.get("capture") or {}).get("ok"):
            raise NotVerifiedError(f"nothing optimised to save: {reason}; rerun with --disable for the pass the "
                                   "report names, or --verbose for details")
        raise NotCapturedError(f"nothing optimised to save: {reason}; or call accelc.accelerate() in Python, which "
                               "runs the model eagerly")
    check_output_folder(path, force)
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    os.chmod(staging, _folder_mode())  # mkdtemp makes it private (0700); an artifact is a normal folder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = export_program(fast.graph_module, tuple(fast.example_inputs), fast.signature)
            torch.export.save(program, os.path.join(staging, MODEL_FILE))
        if report_plan := fast.report.get("plan"):
            _write_json(os.path.join(staging, PLAN_FILE), report_plan)
        timeline = getattr(fast.runner, "timeline", None)
        if timeline is not None:
            timeline.save_chrome_trace(os.path.join(staging, TRACE_FILE))
        runner_save = getattr(fast.runner, "save", None)
        if callable(runner_save):
            runner_save(staging)
        report = dict(fast.report)
        report["fingerprint"] = fingerprint(report.get("device", "cpu"))
        report["inputs"] = [{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")} for x in fast.example_inputs]
        if fast.signature is not None:
            report["signature"] = fast.signature.as_dict()
        if fast.outputs is not None:
            report["outputs"] = fast.outputs.as_dict()
        _write_json(os.path.join(staging, REPORT_FILE), report)
        _write_json(os.path.join(staging, FINGERPRINT_FILE), report["fingerprint"])
        with open(os.path.join(staging, HTML_FILE), "w", encoding="utf-8") as f:
            f.write(render_html(report))
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def export_program(gm, example: tuple, signature) -> torch.export.ExportedProgram:
    """The optimised graph as an ExportedProgram with the signature's sizes dynamic (named ``Dim``s,
    with their ranges), so plain ``torch.export.load(...).module()`` accepts every verified shape.
    Its outputs are a flat tuple of tensors: no model class is needed to load it."""
    if signature is None or signature.is_static:
        return torch.export.export(gm, example, strict=False)
    grown = signature.export_inputs(example)
    try:
        return torch.export.export(gm, grown, dynamic_shapes=signature.dynamic_shapes(), strict=False)
    except Exception:  # a named range torch.export checks more strictly than the capture did
        log.debug("export with named dims failed; exporting with Dim.AUTO", exc_info=True)
    program = torch.export.export(gm, grown, dynamic_shapes=signature.dynamic_shapes(named=False), strict=False)
    user_inputs = set(program.graph_signature.user_inputs)
    pinned = signature.pinned_by([n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs])
    if pinned:
        raise ArtifactError(f"the optimised graph pins the dynamic sizes {', '.join(pinned)} on export; re-run with "
                            "--static, or --disable the pass that wrote them in (see report.json)")
    return program


def _move_into_place(staging: str, target: str) -> None:
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
        os.rename(target, os.path.join(old, "previous"))
    os.rename(staging, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable or corrupt ({type(exc).__name__}); re-create the artifact with `accelc optimize`") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is corrupt (not a JSON object); re-create the artifact with `accelc optimize`")
    return data


@contextmanager
def _weights_only_loads():
    """Force every torch.load inside to ``weights_only=True``: torch.export.load would otherwise
    fall back to full unpickling when a weights-only load fails."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def _refuse_pickled_objects(model_path: str) -> None:
    from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX

    try:
        with zipfile.ZipFile(model_path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{model_path} is corrupt ({exc}); re-create the artifact with `accelc optimize`") from exc
    if bad is not None:
        raise ArtifactError(f"{model_path} is corrupt (bad CRC in {bad}); re-create the artifact with `accelc optimize`")
    pickled = [n for n in names if os.path.basename(n).startswith((CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX))]
    if pickled:
        raise ArtifactError(f"{model_path} holds pickled Python objects ({pickled[0]}); accelc does not load those, for safety")


def read_artifact(path: str, device: str | None = None) -> dict:
    """An artifact folder's parts, as :class:`accelc.module.AcceleratedModule` takes them
    (``AcceleratedModule.load`` is the public way in). The PyTorch runtime's lowering stage is
    replayed from the report through the same pass manager, the stage verified again."""
    from .capture import graph_module_from_program
    from .outputs import OutputStructure
    from .pipeline import fired_names, lower
    from .registry import Registry
    from .runtime.torch import TorchRuntime, resolve_device
    from .shapes import Signature
    from .stages import LOWERING, STAGES

    if not os.path.isdir(path):
        raise ArtifactError(f"{path}: no such artifact folder; create one with `accelc optimize model.py -o {path}`")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ArtifactError(f"{path} is not a complete accelc artifact ({', '.join(missing)} missing); re-create it with `accelc optimize`")
    report = _read_json(os.path.join(path, REPORT_FILE))
    saved = _read_json(os.path.join(path, FINGERPRINT_FILE))
    if saved.get("torch") != torch.__version__:
        log.warning("artifact %s was written with torch %s; this is torch %s", path, saved.get("torch"), torch.__version__)
    model_path = os.path.join(path, MODEL_FILE)
    _refuse_pickled_objects(model_path)
    try:
        with _weights_only_loads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(model_path)
    except Exception as exc:
        raise ArtifactError(f"{model_path} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); re-create the artifact with `accelc optimize`") from exc
    dev = resolve_device(device or report.get("device", "cpu"))
    gm = graph_module_from_program(program).to(dev)
    example = _recorded_example(program, report, dev)
    signature = Signature.from_dict(report["signature"]) if report.get("signature") else None
    outputs = OutputStructure.from_dict(report["outputs"]) if report.get("outputs") else gm.meta["accelc_outputs"]
    if os.path.isfile(os.path.join(path, PLAN_FILE)):
        runner = _load_partitioned(path, gm, report)
    elif report.get("branches") and not report.get("backend_fallback"):
        from .runtime.branches import build_branch_executor

        runner = build_branch_executor(gm, workers=report["branches"]["workers"])
    elif (report.get("backend") == "onnxruntime" and os.path.isfile(os.path.join(path, "model.onnx"))
          and not _int8_saturates_here(path, report)):
        from .runtime.onnxruntime import load_onnx_runtime

        runner = load_onnx_runtime(path, dev)
    elif report.get("backend") == "openvino" and os.path.isfile(os.path.join(path, "model.xml")):
        from .runtime.openvino import load_openvino_runtime

        runner = load_openvino_runtime(path, dev)
    else:
        registry = Registry.discover()
        same_device = torch.device(report.get("device", "cpu")).type == dev.type
        # A runtime that had no PyTorch lowering stage (its model.onnx refused here) gets this device's.
        recorded = report.get("backend") not in ("onnxruntime", "openvino")
        names = (fired_names(report.get("runtime_lowering") or []) if same_device and recorded
                 else STAGES[LOWERING].default_names(dev.type))  # loaded onto another device: its own lowerings
        passes = [registry.create("fx", name) for name in names]
        lowered, _ = lower(gm, dev, example, passes, signature)
        runner = TorchRuntime(lowered, dev, example)
    return dict(runner=runner, report=report, graph_module=gm, example_inputs=example, signature=signature,
                outputs=outputs)


def _int8_saturates_here(path: str, report: dict) -> bool:
    """Whether ``model.onnx`` holds full-range int8 weights and this CPU lacks VNNI, where ONNX
    Runtime's int8 kernel saturates (see accelc.cpu): then the fp32 graph of model.pt2 runs
    instead, with a warning, rather than wrong answers."""
    quantised = [r for r in (report.get("onnx") or {}).get("onnx_passes") or []
                 if r.get("name") in ("quantize_int8", "quantize_conv_int8") and r.get("status") == "fired"]
    # Artifacts from before weight_bits was recorded were quantised at full range.
    if not any(r.get("stats", {}).get("weight_bits", 8) == 8 for r in quantised) or cpu_has_int8_dot_products():
        return False
    warnings.warn(f"accelc: {path}/model.onnx has 8-bit int8 weights, which this CPU (no VNNI) computes wrongly "
                  "(int16 saturation); running its fp32 graph (model.pt2) on the PyTorch runtime instead. "
                  "To get int8 here, run `accelc optimize --precision int8` on this machine", AccelcFallbackWarning,
                  stacklevel=3)
    return True


def _load_partitioned(path: str, gm, report: dict):
    """Rebuild the stage executor from the saved plan, re-planned if the reloaded graph renamed nodes."""
    from .partition.partitioner import fit_plan
    from .partition.plan import Plan
    from .runtime.pipeline import build_executor

    with open(os.path.join(path, PLAN_FILE), encoding="utf-8") as f:
        plan = fit_plan(gm, Plan.from_json(f.read()))
    return build_executor(gm, plan, microbatches=(report.get("partition") or {}).get("microbatches", 1))


def _folder_mode() -> int:
    """The mode ``os.makedirs`` would give a new folder under the process's umask (read, not
    set: setting it to read it back would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = 0o022
    return 0o777 & ~umask


def _recorded_example(program, report: dict, device) -> tuple:
    """The example inputs at the user's own sizes: the program's (exported with sizes 1 grown to 2,
    by repeating the tensor) cut back to the sizes the report recorded. Runtime lowerings pack
    weights for the example's sizes, so the size matters, not only the values."""
    stored = tuple(program.example_inputs[0]) if program.example_inputs else ()
    shapes = [spec["shape"] for spec in report.get("inputs", [])]
    if not stored or len(shapes) != len(stored):
        return inputs_from_report(report, device)
    cut = []
    for x, shape in zip(stored, shapes):
        if x.dim() != len(shape) or any(want > have for want, have in zip(shape, x.shape)):
            return inputs_from_report(report, device)
        cut.append(x[tuple(slice(0, n) for n in shape)].contiguous().to(device))
    return tuple(cut)


def inputs_from_report(report: dict, device: torch.device, seed: int = 0) -> tuple:
    """Seeded random inputs matching the shapes and dtypes recorded in the report."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in report.get("inputs", []):
        dtype = getattr(torch, spec["dtype"])
        if dtype.is_floating_point:
            out.append(torch.randn(spec["shape"], generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.ones(spec["shape"], dtype=torch.bool))
        else:
            out.append(torch.zeros(spec["shape"], dtype=dtype))
    return tuple(x.to(device) for x in out)
