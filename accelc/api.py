"""The public front door: :func:`accelerate` and :func:`load`.

    model + inputs ─capture─► graph ─passes (lint + verify each)─► optimised graph ─► runtime
                         └─ capture fails: keep the eager model, report why (file:line)

Whatever happens, the returned module gives the model's answers: a capture that fails, a pass
that changes the outputs or a final check that fails all fall back, and the report says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import __version__
from .capture import capture, count_compute_nodes, double_batch
from .errors import ModelRunError, UserInputError
from .loader import normalize_inputs
from .pass_base import PassContext
from .pass_manager import PassManager
from .pipeline import build_pipeline
from .registry import discover, resolve
from .runtime.torch import TorchRuntime, resolve_device, to_device
from .source import exception_location, first_line
from .verify import Verifier, tolerance_for_precision

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def graph_precision(precision: str) -> str:
    """The precision the fx graph itself runs at: int8 is ONNX Runtime's dynamic quantisation,
    applied to the exported model, so the fx passes run (and are verified) at fp32."""
    return "fp32" if precision == "int8" else precision


# The hooks torch registers for every module; the dicts are updated in place, so holding them works.
_GLOBAL_MODULE_HOOKS = tuple(getattr(torch.nn.modules.module, name, {}) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


class AcceleratedModule(torch.nn.Module):
    """Callable like the original model; carries ``report`` and can ``save`` itself."""

    def __init__(self, runner: torch.nn.Module, report: dict, graph_module=None, example_inputs: tuple = ()):
        super().__init__()
        self.runner = runner
        self._run_direct = runner.forward  # a plain attribute: no nn.Module __getattr__ on each call
        self.report = report
        self.graph_module = graph_module
        self.example_inputs = example_inputs

    def forward(self, *args):
        return self._run_direct(*args)  # straight to the runtime: no second round of module hooks

    def __call__(self, *args, **kwargs):
        # nn.Module.__call__ spends ~5 µs per call on hook bookkeeping, a tenth of a small model's
        # latency on ONNX Runtime. With no hook registered (here or globally) the runtime is
        # called directly; with any, the normal path runs them.
        if kwargs or self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or \
                self._backward_pre_hooks or any(_GLOBAL_MODULE_HOOKS):
            return super().__call__(*args, **kwargs)
        return self._run_direct(*args)

    @property
    def captured(self) -> bool:
        return self.graph_module is not None

    def save(self, path: str, force: bool = False) -> str:
        """Write the artifact folder (model.pt2, report.json, report.html, fingerprint.json)."""
        from .artifact import save_artifact

        return save_artifact(self, path, force=force)


def load(path: str) -> AcceleratedModule:
    """Load an artifact folder written by :meth:`AcceleratedModule.save`."""
    from .artifact import load_artifact

    return load_artifact(path)


def accelerate(
    model: torch.nn.Module,
    inputs,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    passes: list[str] | None = None,
    disable: list[str] | None = None,
    verify: bool = True,
    measure: bool = False,
    static: bool = False,
    stages: int | None = None,
    devices: list[str] | None = None,
    microbatches: int = 1,
    profile: bool = False,
    branches: int | None = None,
    source_file: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> AcceleratedModule:
    """Capture ``model`` on ``inputs``, optimise and verify it, and return a faster equivalent."""
    progress = on_progress or (lambda message: None)
    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"accelerate() needs a torch.nn.Module, got {type(model).__name__}")
    if backend not in BACKENDS:
        raise UserInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    if precision == "int8" and (backend == "torch" or dev.type != "cpu" or stages or devices or branches):
        raise UserInputError("--precision int8 is ONNX Runtime's dynamic quantisation on the CPU: use it with "
                             "--backend onnxruntime (or auto) on --device cpu, without --stages/--devices/--branches")
    inputs = to_device(normalize_inputs(inputs), dev)
    registry = discover()
    pass_names = build_pipeline(passes, disable)
    unknown_disabled = [n for n in disable or () if n not in registry]
    pass_list = resolve(pass_names + unknown_disabled, registry)[: len(pass_names)]

    model = model.eval().to(dev)
    report = _new_report(backend, dev, precision, source_file)
    if precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
        report["warnings"].append("this CPU has no native bf16 instructions (avx512_bf16/amx_bf16): bf16 matmuls "
                                  "are emulated and usually slower than fp32 here")
        log.warning("accelc: %s", report["warnings"][-1])
    progress("running the model eagerly")
    run_eagerly(model, inputs, source_file)

    full_inputs = inputs
    if microbatches > 1:
        # The pipeline runs the captured graph once per micro-batch: capture at the micro-batch size.
        inputs = microbatch_inputs(inputs, microbatches)
    progress("capturing with torch.export")
    start = time.perf_counter()
    cap = capture(model, inputs, source_file)
    report["capture"] = {
        "method": cap.method, "ok": cap.ok, "seconds": round(time.perf_counter() - start, 3),
        "failure": cap.failure, "location": cap.location, "attempts": cap.attempts,
    }
    if not cap.ok:
        where = f" at {cap.location}" if cap.location else ""
        report["fallback"] = f"could not capture the model{where} ({cap.failure}); running it eagerly"
        log.warning("accelc: %s", report["fallback"])
        return AcceleratedModule(model, report)

    report["nodes"] = {"before": count_compute_nodes(cap.graph_module)}
    ctx = PassContext(device=dev, precision=graph_precision(precision), example_inputs=inputs)
    optimised = optimise_captured(model, cap.graph_module, inputs, pass_list, ctx, verify, progress)
    if optimised.records is not None:
        report["passes"] = [r.as_dict() for r in optimised.records]
        report["refusals"] = [r.__dict__ for r in ctx.refusals]
        report["nodes"]["after"] = count_compute_nodes(optimised.gm)
        report["verification"] = optimised.final
    if optimised.failure:
        report["fallback"] = f"{optimised.failure}; running eagerly"
        log.warning("accelc: %s", report["fallback"])
        return AcceleratedModule(model, report)
    gm = optimised.gm

    if branches and (stages or devices):
        raise UserInputError("--branches and --stages/--devices are two ways to split one graph; use one of them")
    if branches:
        runner = branch_parallel_runtime(model, gm, inputs, branches, precision, report, progress)
    elif stages or devices:
        runner = partitioned_runtime(model, gm, full_inputs, stages, devices, microbatches, profile, precision, report, progress)
    else:
        def recapture():
            progress("re-capturing with a symbolic batch for the ONNX export")
            return dynamic_batch_graph(model, inputs, pass_list, ctx, verify, report)

        runner = select_runtime(model, gm, inputs, backend, dev, precision, static, report, progress, recapture)
    fast = AcceleratedModule(runner, report, gm, inputs)
    if measure:
        progress("timing eager vs accelc")
        report["latency"] = measure_latency(model, fast, inputs, dev)
    return fast


def dynamic_batch_graph(model, inputs, pass_list, ctx: PassContext, verify: bool, report: dict):
    """The optimised graph once more, from a capture whose batch is symbolic; None (and why in
    the report) when the model will not capture that way or the result disagrees with eager.

    A graph captured at batch 1 has the 1 written into every view; ONNX exports of it keep
    that batch. This one is verified at batch 2 (its capture size) and batch 1.
    """
    big = double_batch(inputs)
    cap = capture(model, big, dynamic_batch=True)
    if not cap.ok:
        report["dynamic_batch"] = f"the model did not capture with a symbolic batch ({cap.failure})"
        return None
    big_ctx = PassContext(device=ctx.device, precision=ctx.precision, example_inputs=big)
    optimised = optimise_captured(model, cap.graph_module, big, pass_list, big_ctx, verify, final_inputs=inputs)
    if optimised.failure:
        report["dynamic_batch"] = f"symbolic-batch capture: {optimised.failure}"
        return None
    return optimised.gm


@dataclass
class Optimised:
    """What :func:`optimise_captured` made of a captured graph."""

    gm: torch.fx.GraphModule | None  # the optimised graph; None when a check failed
    records: list | None  # pass records; None when the capture itself disagreed with eager
    final: dict | None  # the final check against eager
    failure: str | None  # why the graph cannot be used, or None


def optimise_captured(model, gm, inputs, pass_list, ctx: PassContext, verify: bool, progress=lambda message: None,
                      final_inputs: tuple | None = None) -> Optimised:
    """Check a captured graph against eager, run the passes (each verified), and check the result
    against eager again, on ``final_inputs`` (default ``inputs``) and seeded random inputs."""
    progress("verifying the captured graph")
    verifier = Verifier.for_module(model, inputs)
    comparison, captured_outputs = verifier.check(gm)
    if not comparison.ok:
        return Optimised(None, None, None, f"the captured graph disagrees with eager ({comparison.message})")
    verifier.accept(captured_outputs)
    verifier.tolerance_of = tolerance_for_precision(ctx.precision)
    gm, records = PassManager(pass_list, verify=verify, on_progress=progress).run(gm, ctx, verifier)
    progress("checking the optimised graph against eager")
    final = _final_check(model, gm, final_inputs if final_inputs is not None else inputs, ctx.precision)
    if not final["ok"]:
        return Optimised(gm, records, final, f"optimised graph disagrees with eager ({final['message']})")
    return Optimised(gm, records, final, None)


def select_runtime(model, gm, inputs, backend: str, device, precision: str, static: bool, report: dict, progress,
                   recapture=None):
    """The runtime for the optimised graph: PyTorch, ONNX Runtime, or (``auto``) whichever measures faster.

    ONNX Runtime must match eager on the verification inputs to be used at all; when it cannot be
    built or disagrees, the PyTorch runtime is used and the report says why.
    """
    torch_runtime = TorchRuntime(gm, device, inputs)
    report["runtime_lowering"] = [r.as_dict() for r in torch_runtime.lowering_records]
    report["backend"] = "torch"
    if backend == "torch":
        return torch_runtime
    progress("exporting to ONNX and building an ONNX Runtime session")
    try:
        import tempfile

        from .runtime.onnxruntime import build_onnx_runtime

        ort_runtime, section = build_onnx_runtime(gm, inputs, device, precision, tempfile.mkdtemp(prefix="accelc-onnx-"),
                                                  static=static, dynamic_graph=recapture)
        report["onnx"] = section
        comparison, _ = _checker(model, inputs, precision).check(ort_runtime)
    except Exception as exc:  # export or session failure: keep the PyTorch runtime, say why
        log.debug("ONNX Runtime backend failed", exc_info=True)
        report["backend_fallback"] = f"ONNX Runtime unavailable ({first_line(exc)}); using the PyTorch runtime"
        return torch_runtime
    if not comparison.ok:
        report["backend_fallback"] = f"ONNX Runtime disagrees with eager ({comparison.message}); using the PyTorch runtime"
        return torch_runtime
    if backend == "auto" and precision != "int8":  # PyTorch has no int8 form to compare with
        from .timing import compare_latency
        from .verify import verification_inputs

        progress("timing PyTorch vs ONNX Runtime")
        timings = compare_latency({"torch": torch_runtime, "onnxruntime": ort_runtime},
                                  verification_inputs(inputs, count=1, seed=5), seconds=1.0, device=device)
        chosen = min(timings, key=lambda name: timings[name].median_ms)
        report["backend_choice"] = {name: round(t.median_ms, 3) for name, t in timings.items()} | {"chosen": chosen}
        if chosen == "torch":
            return torch_runtime
    # A partial export runs ONNX Runtime pieces inside a torch graph; it is saved as model.pt2 alone.
    report["backend"] = "onnxruntime (partial)" if section.get("partial") else "onnxruntime"
    return ort_runtime


def partitioned_runtime(model, gm, inputs, stages, devices, microbatches: int, profile: bool, precision: str,
                        report: dict, progress):
    """Cut the graph into stages (model parallel; pipelined over micro-batches when ``microbatches`` > 1).

    The executor must match eager like any runtime; when it does not, the model runs eagerly and
    the report says why. Bad settings (more stages than nodes, a device list
    that does not match) are the user's error.
    """
    from .partition.partitioner import make_plan
    from .runtime.pipeline import build_executor

    progress(f"partitioning into {stages or len(devices)} stages")
    plan = make_plan(gm, microbatch_inputs(inputs, microbatches), stages=stages, devices=devices, profile=profile)
    report["backend"] = "torch"
    report["plan"] = json.loads(plan.to_json())
    report["partition"] = {"stages": plan.num_stages, "devices": plan.devices, "microbatches": microbatches,
                           "profiled": plan.profiled, "balance": round(plan.balance(), 3)}
    return _verified_executor(model, inputs, precision, report, "partitioned",
                              lambda: build_executor(gm, plan, microbatches=microbatches))


def branch_parallel_runtime(model, gm, inputs, workers: int, precision: str, report: dict, progress):
    """Run independent heavy branches of the graph concurrently on ``workers`` threads.

    Verified like any runtime; when it fails or disagrees, the model runs eagerly and the report
    says why. ``report["branches"]`` records the grouping so a saved artifact rebuilds the same.
    """
    from .runtime.branches import build_branch_executor

    if workers < 1:
        raise UserInputError(f"--branches needs at least 1 worker thread, got {workers}")
    progress(f"grouping independent branches for {workers} worker threads")
    report["backend"] = "torch"

    def build():
        executor = build_branch_executor(gm, workers=workers)
        report["branches"] = {"workers": workers, "threads_per_worker": executor.threads_per_worker,
                              "groups": len(executor.groups), "heavy_groups": executor.heavy_groups}
        return executor

    return _verified_executor(model, inputs, precision, report, "branch-parallel", build)


def _verified_executor(model, inputs, precision: str, report: dict, kind: str, build):
    """``build()``'s executor if it runs and matches eager; else the eager model, with the reason
    in ``report["backend_fallback"]``. A run's timeline, when the executor keeps one, goes in the report."""
    try:
        executor = build()
        comparison, _ = _checker(model, inputs, precision).check(executor)
    except Exception as exc:
        log.debug("%s execution failed", kind, exc_info=True)
        report["backend_fallback"] = f"{kind} execution failed ({first_line(exc)}); running eagerly"
        return model
    if not comparison.ok:
        report["backend_fallback"] = f"{kind} execution disagrees with eager ({comparison.message}); running eagerly"
        return model
    if executor.timeline is not None:
        report["timeline"] = timeline_as_dict(executor.timeline)
    return executor


def microbatch_inputs(inputs: tuple, microbatches: int) -> tuple:
    """The first 1/M of every input along dim 0 (the batch), which must divide evenly."""
    if microbatches <= 1:
        return inputs
    batch = inputs[0].shape[0] if inputs and inputs[0].dim() else 0
    if batch % microbatches or any(x.dim() == 0 or x.shape[0] != batch for x in inputs):
        raise UserInputError(
            f"--microbatches {microbatches} needs every input's first dimension to be one batch size divisible by "
            f"{microbatches} (got {[tuple(x.shape) for x in inputs]}); give larger example inputs or fewer micro-batches"
        )
    return tuple(x[: batch // microbatches] for x in inputs)


def timeline_as_dict(timeline) -> dict:
    from dataclasses import asdict

    return asdict(timeline)


def _checker(model, inputs, precision: str) -> Verifier:
    verifier = Verifier.for_module(model, inputs, count=3, seed=1234)
    verifier.tolerance_of = tolerance_for_precision(precision)
    return verifier


def run_eagerly(model: torch.nn.Module, inputs: tuple, source_file: str | None = None):
    """Run the model on its own inputs; a model that raises is the user's error, shown at their line."""
    try:
        with torch.inference_mode():
            return model(*inputs)
    except Exception as exc:
        where = exception_location(exc, prefer=source_file)
        at = f" at {where}" if where else ""
        raise ModelRunError(f"the model raised {first_line(exc)}{at} when run on its own example inputs; fix the model or its inputs") from exc


def _final_check(model, gm, inputs, precision: str) -> dict:
    """Compare the optimised graph with eager on the example and on seeded random inputs."""
    verifier = _checker(model, inputs, precision)
    comparison, _ = verifier.check(gm)
    result = comparison.as_dict()
    result["inputs_checked"] = len(verifier.inputs)
    result["tolerance"] = "dtype-aware: fp32 rtol 1e-3 atol 1e-4·max(1,|ref|); see accelc.verify"
    return result


def measure_latency(model, fast, inputs, device, seconds: float = 2.0) -> dict:
    from .timing import compare_latency
    from .verify import verification_inputs

    input_sets = verification_inputs(inputs, count=2, seed=99)
    timings = compare_latency({"eager": model, "accelc": fast}, input_sets, seconds=seconds, device=device)
    result = {name: t.as_dict() for name, t in timings.items()}
    result["speedup"] = round(timings["eager"].median_ms / timings["accelc"].median_ms, 3)
    return result


def _new_report(backend: str, device: torch.device, precision: str, source_file: str | None) -> dict:
    return {
        "accelc_version": __version__,
        "model": os.path.basename(source_file) if source_file else None,
        "backend": "torch" if backend == "auto" else backend,
        "device": str(device),
        "precision": precision,
        "capture": {},
        "passes": [],
        "refusals": [],
        "nodes": {},
        "verification": None,
        "fallback": None,
        "latency": None,
        "warnings": [],
    }


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU advertises bf16 dot-product instructions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return True  # unknown platform: do not warn on a guess
    return "avx512_bf16" in flags or "amx_bf16" in flags


__all__ = ["accelerate", "load", "AcceleratedModule", "run_eagerly", "measure_latency"]
