"""The systems the bench compares and how each is built: the groups ``--against`` names and
:func:`expand_systems` that turns them into concrete systems, the builder contract
(:class:`BenchContext` in, :class:`Built` out, :class:`SystemSkipped` / :class:`SystemUnavailable`
for a system that does not apply or is not there), and one ``_build_*`` function per kind of
system (eager, torch.compile, ONNX Runtime, OpenVINO, accelc), looked up by :func:`_builders`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from . import openvino as ov_bench
from .ort import OrtRunner, _export_onnx, _input_names, _ort_optimize, _ort_session, _short_reason

# Groups the user can name with --against; each expands to concrete systems.
SYSTEM_GROUPS: dict[str, tuple[str, ...]] = {
    "eager": ("eager",),
    "compile": ("compile",),
    "compile-bf16": ("compile-bf16",),
    "onnxruntime": ("onnxruntime",),
    "ort-transformers": ("ort-transformers-dynamo", "ort-transformers-torchscript"),
    # OpenVINO's CPU plugin with the precision pinned to f32, and at the precision it picks itself
    # (bf16 on CPUs with AVX512_BF16 or AMX). Optional: without openvino both rows say how to get it.
    "openvino": ("openvino-f32", "openvino"),
    # accelc on each backend it has (OpenVINO: optional, like the peer rows).
    "accelc": ("accelc-torch", "accelc-onnxruntime", "accelc-openvino"),
    # The same builds with every size pinned to the example's (dynamic=False): what dynamic shapes cost.
    "accelc-static": ("accelc-torch-static", "accelc-onnxruntime-static"),
    # accelc as a user would run it (backend auto) at each precision: fp32 (the bench's), bf16,
    # --precision auto at its default tolerance, int8 (MatMul/Gemm quantised per call), and int8
    # with calibration inputs (convolutions too: three seeded variants of the example, not the
    # bench's timed inputs).
    "accelc-precisions": ("accelc-auto", "accelc-bf16", "accelc-precision-auto", "accelc-int8",
                          "accelc-int8-calibrated"),
}
ACCELC_PRECISIONS: dict[str, str] = {"accelc-bf16": "bf16", "accelc-precision-auto": "auto", "accelc-int8": "int8",
                                     "accelc-int8-calibrated": "int8"}
DEFAULT_SYSTEMS: tuple[str, ...] = tuple(g for g in SYSTEM_GROUPS if g not in ("accelc-static", "accelc-precisions"))
ACCELC_BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")

# model_type values from transformers configs that onnxruntime.transformers optimises under
# another name (same attention and layer-norm layout).
_ORT_MODEL_TYPE_ALIASES = {"roberta": "bert", "distilbert": "bert", "electra": "bert", "xlm-roberta": "bert", "deit": "vit"}


class SystemSkipped(Exception):
    """The system does not apply to this model (e.g. no optimizer for its architecture)."""


class SystemUnavailable(Exception):
    """The system is not installed or not implemented here."""


@dataclass
class Built:
    """A runnable system: ``run(*inputs)`` for timing, ``outputs(raw)`` turns its result into tensors."""

    run: Callable
    inputs: list[tuple]  # the input sets in the form this system takes (dtype, device)
    outputs: Callable = lambda raw: raw
    note: str = ""
    # The precision the system computes at when it is not the bench's (compile-bf16, OpenVINO's
    # own choice): its error is judged by the looser of that precision's tolerance and the bench's.
    precision: str | None = None


@dataclass
class BenchContext:
    model: torch.nn.Module  # fp32, on the target device
    eager_model: torch.nn.Module  # at the benchmark precision, on the target device
    fp32_inputs: list[tuple]  # on the target device
    inputs: list[tuple]  # at the benchmark precision, on the target device
    device: torch.device
    precision: str
    tmpdir: str
    threads: int


def _shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module object tree that shares the weight tensors (no second copy of weights)."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


def _build_eager(ctx: BenchContext) -> Built:
    return Built(ctx.eager_model, ctx.inputs)


def _build_compile(ctx: BenchContext, mode: str | None = None) -> Built:
    compiled = torch.compile(_shared_copy(ctx.eager_model), mode=mode)
    return Built(compiled, ctx.inputs, note=f"mode={mode}" if mode else "")


def _build_compile_freezing(ctx: BenchContext) -> Built:
    """Inductor with ``freezing``: weights become constants (folded, prepacked) at compile time.

    Inductor reads its config when it compiles, at the first call, so that call is made here,
    under the patch; later calls reuse the compiled graph (the inputs keep their shapes).
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(_shared_copy(ctx.eager_model))
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled(*ctx.inputs[0])
    return Built(compiled, ctx.inputs, note="inductor freezing=True")


def _bf16_emulated(device: torch.device) -> bool:
    """Whether bf16 arithmetic on ``device`` is emulated (converted to fp32 and back) rather than native."""
    if device.type == "cuda":
        return not torch.cuda.is_bf16_supported(including_emulation=False)
    from ..cpu import cpu_has_native_bf16

    return not (torch.backends.mkldnn.is_available() and cpu_has_native_bf16())


def _to_fp32(raw):
    return torch.utils._pytree.tree_map(
        lambda x: x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x, raw)


def _build_compile_bf16(ctx: BenchContext) -> Built:
    """torch.compile with freezing on a bf16 copy of the fp32 model, fed bf16 inputs (integer and
    boolean inputs as they are); outputs go back to fp32 for the comparison with eager fp32.

    Like :func:`_build_compile_freezing`, the first call (where Inductor compiles) is made here,
    under the freezing patch, which is restored when it returns.
    """
    import torch._inductor.config as inductor_config

    model = copy.deepcopy(ctx.model).to(torch.bfloat16)
    inputs = [tuple(x.to(torch.bfloat16) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in xs)
              for xs in ctx.fp32_inputs]
    compiled = torch.compile(model)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled(*inputs[0])
    note = "inductor freezing=True, bf16 weights and inputs"
    if _bf16_emulated(ctx.device):
        if ctx.device.type == "cuda":
            which = "GPU"
        elif torch.backends.mkldnn.is_available():
            which = "CPU (no avx512_bf16/amx_bf16)"
        else:
            which = "CPU (this torch has no oneDNN)"
        note += f"; bf16 is emulated on this {which}: its speed is not representative"
    return Built(compiled, inputs, outputs=_to_fp32, note=note, precision="bf16")


def _build_openvino(ctx: BenchContext, f32: bool) -> Built:
    """OpenVINO's CPU plugin on ``openvino.convert_model`` of the fp32 module: torch's thread count,
    one stream, the latency hint; ``f32`` pins the inference precision, otherwise OpenVINO picks
    it and the note says which it ran."""
    if ctx.device.type != "cpu":
        raise SystemSkipped(f"the bench runs OpenVINO on its CPU plugin only, not on {ctx.device.type}")
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise SystemUnavailable(ov_bench.import_reason(exc)) from exc
    ov_model = ov_bench.convert(ctx.model, ctx.fp32_inputs[0])
    compiled, chosen = ov_bench.compile_for_cpu(ov_model, ctx.threads, f32=f32)
    runner = ov_bench.OpenVinoRunner(compiled, _input_names(ctx.model, len(ctx.fp32_inputs[0])))
    if f32:
        note = f"inference precision {chosen}"
    else:
        note = f"inference precision {chosen} (OpenVINO's default on this CPU)"
    # Like accelc, OpenVINO takes the fp32 model and inputs and lowers precision itself.
    return Built(runner, ctx.fp32_inputs, outputs=runner.to_torch, note=note,
                 precision=None if chosen == "fp32" else chosen)


def _build_accelc(ctx: BenchContext, backend: str, dynamic: bool | None = None, precision: str | None = None,
                  calibrated: bool = False) -> Built:
    """accelc on ``backend`` at the bench's precision, or at ``precision`` (bf16, int8, auto: the
    accelc-PRECISION rows, whose errors are judged by the precision that runs); ``calibrated``:
    with three seeded variants of the example as calibration inputs."""
    from ..api import accelerate
    from ..verify import random_inputs_like

    if backend == "openvino":
        from ..onnx.to_openvino import openvino_available

        why = openvino_available()
        if why:
            raise SystemUnavailable(why)

    try:
        calibration = [random_inputs_like(ctx.fp32_inputs[0], seed=1000 + k) for k in range(3)] if calibrated else None
        fast = accelerate(ctx.model, ctx.fp32_inputs[0], backend=backend, device=ctx.device,
                          precision=precision or ctx.precision, dynamic=dynamic, calibration=calibration)
    except ImportError as exc:  # the backend's runtime is not installed; any other error is a failure
        raise SystemUnavailable(_short_reason(exc)) from exc
    report = fast.report
    note = f"{report.get('backend')} at {report.get('precision')}" if precision or backend == "auto" else ""
    if report.get("fallback"):
        note = f"fell back to eager: {report['fallback']}"
    elif report.get("backend_fallback"):
        note += f" ({report['backend_fallback']})"
    runs_at = report.get("precision") if report.get("precision") != ctx.precision else None
    # accelc takes the fp32 model and lowers precision itself, so it gets the fp32 inputs.
    return Built(fast, ctx.fp32_inputs, note=note, precision=runs_at)


def _ort_model_type(model: torch.nn.Module) -> tuple[str, int, int]:
    """(onnxruntime.transformers model_type, num_heads, hidden_size) of a transformers model."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    for module in model.modules():
        config = getattr(module, "config", None)
        model_type = getattr(config, "model_type", None)
        if isinstance(model_type, str) and hasattr(config, "to_dict"):
            break
    else:
        raise SystemSkipped("not a transformers model: the onnxruntime.transformers optimizer needs a known model type (bert, gpt2, vit, ...)")
    ort_type = _ORT_MODEL_TYPE_ALIASES.get(model_type, model_type)
    if ort_type not in MODEL_TYPES:
        raise SystemSkipped(f"onnxruntime.transformers has no optimizer for model type {model_type!r}")
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    return ort_type, heads, hidden


def _ort_providers(device: torch.device, provider: str | None) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        if provider not in (None, "CPUExecutionProvider"):  # else a "TensorRT" row would be plain CPU
            raise SystemSkipped(f"{provider} runs on CUDA devices only")
        return ["CPUExecutionProvider"]
    wanted = provider or "CUDAExecutionProvider"
    if wanted not in available:
        raise SystemUnavailable(f"onnxruntime has no {wanted} here (it has {', '.join(available)})")
    options = {"device_id": device.index or 0}
    chain = [(wanted, options)]
    if wanted != "CUDAExecutionProvider" and "CUDAExecutionProvider" in available:
        chain.append(("CUDAExecutionProvider", options))  # for the nodes TensorRT does not take
    return chain + ["CPUExecutionProvider"]


def _build_ort(ctx: BenchContext, name: str, dynamo: bool = True, optimize: bool = False, provider: str | None = None) -> Built:
    providers = _ort_providers(ctx.device, provider)
    model_type = _ort_model_type(ctx.eager_model) if optimize else None
    path = os.path.join(ctx.tmpdir, f"{name}.onnx")
    _export_onnx(ctx.eager_model, ctx.inputs[0], path, dynamo)
    note = ""
    if not optimize:
        session = _ort_session(path, ctx.threads, providers)
    else:
        opt_path = os.path.join(ctx.tmpdir, f"{name}.opt.onnx")
        fused = _ort_optimize(path, opt_path, model_type, ctx.device, opt_level=None)
        try:
            session = _ort_session(opt_path, ctx.threads, providers)
        except Exception as exc:
            # The optimizer's own ONNX Runtime pre-pass (its default opt_level for bert / gpt2)
            # can write a model that ONNX Runtime then refuses to load; its Python fusions alone
            # (opt_level 0) still give the peer its best chance, so retry with those.
            fused = _ort_optimize(path, opt_path, model_type, ctx.device, opt_level=0)
            session = _ort_session(opt_path, ctx.threads, providers)
            note = f"opt_level=0 (the default pre-pass gave a model ORT cannot load: {_short_reason(exc)}); "
        note += f"model_type={model_type[0]}" + (f"; fused {', '.join(f'{k}x{v}' for k, v in sorted(fused.items()))}" if fused else "; nothing fused")
    runner = OrtRunner(session, _input_names(ctx.eager_model, len(ctx.inputs[0])), ctx.device)
    return Built(runner, ctx.inputs, outputs=runner.to_torch, note=note)


def _builders(names: list[str]) -> dict[str, Callable[[BenchContext], Built]]:
    # Built on every call, so each _build_* is looked up as this module's attribute when
    # run_bench starts (tests replace them with monkeypatch.setattr(systems, ...)).
    table: dict[str, Callable[[BenchContext], Built]] = {
        "eager": _build_eager,
        "compile": _build_compile,
        "compile-max-autotune": lambda ctx: _build_compile(ctx, "max-autotune"),
        "compile-freezing": _build_compile_freezing,
        "compile-cudagraphs": lambda ctx: _build_compile(ctx, "reduce-overhead"),
        "compile-bf16": _build_compile_bf16,
        "onnxruntime": lambda ctx: _build_ort(ctx, "onnxruntime"),
        "onnxruntime-tensorrt": lambda ctx: _build_ort(ctx, "onnxruntime-tensorrt", provider="TensorrtExecutionProvider"),
        "ort-transformers-dynamo": lambda ctx: _build_ort(ctx, "ort-transformers-dynamo", optimize=True),
        "ort-transformers-torchscript": lambda ctx: _build_ort(ctx, "ort-transformers-torchscript", dynamo=False, optimize=True),
        "openvino-f32": lambda ctx: _build_openvino(ctx, f32=True),
        "openvino": lambda ctx: _build_openvino(ctx, f32=False),
    }
    table["accelc-auto"] = lambda ctx: _build_accelc(ctx, "auto")
    for name, precision in ACCELC_PRECISIONS.items():
        table[name] = lambda ctx, p=precision, c=name.endswith("-calibrated"): _build_accelc(ctx, "auto", precision=p,
                                                                                            calibrated=c)
    for backend in _accelc_backends():
        table[f"accelc-{backend}"] = lambda ctx, b=backend: _build_accelc(ctx, b)
        table[f"accelc-{backend}-static"] = lambda ctx, b=backend: _build_accelc(ctx, b, dynamic=False)
    return {n: table[n] for n in names}


def _accelc_backends() -> tuple[str, ...]:
    from ..api import BACKENDS

    extra = tuple(b for b in BACKENDS if b != "auto" and b not in ACCELC_BACKENDS)
    return ACCELC_BACKENDS + extra


def expand_systems(systems, max_autotune: bool = False, device: str | torch.device = "cpu") -> list[str]:
    """Expand group names (``compile``, ``accelc``, ...) into concrete systems, eager first, no repeats."""
    if isinstance(systems, str):
        systems = [s.strip() for s in systems.split(",") if s.strip()]
    concrete = {"compile-max-autotune", "compile-freezing", "compile-cudagraphs", "onnxruntime-tensorrt"} | \
        {f"accelc-{b}{tail}" for b in _accelc_backends() for tail in ("", "-static")}
    concrete |= {s for group in SYSTEM_GROUPS.values() for s in group}
    out = ["eager"]
    for item in systems:
        if item in SYSTEM_GROUPS:
            names = list(SYSTEM_GROUPS[item])
            if item == "compile" and max_autotune:
                names.append("compile-max-autotune")
            if item == "compile" and torch.device(device).type == "cuda":
                names.append("compile-cudagraphs")  # mode="reduce-overhead": CUDA graphs
            if item == "onnxruntime" and torch.device(device).type == "cuda":
                names.append("onnxruntime-tensorrt")
            if item == "accelc":
                names = [f"accelc-{b}" for b in _accelc_backends()]
        elif item in concrete:
            names = [item]
        else:
            known = ", ".join(sorted(set(SYSTEM_GROUPS) | concrete))
            raise UserInputError(f"unknown system {item!r} in --against; choose from {known}")
        out += [n for n in names if n not in out]
    if max_autotune and "compile-max-autotune" not in out:  # asked for by name, with or without "compile"
        out.append("compile-max-autotune")
    return out
