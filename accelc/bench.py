"""`accelc bench`: accelc side by side with what users would pick instead, timed honestly.

    model + inputs ─► reference outputs (eager, fp32, on the target device)
        │
        ├─ build each system, one after another:   eager │ torch.compile (default, max-autotune,
        │     (time to first output, RSS growth)     │   CUDA graphs on CUDA)
        │                                            │ ONNX Runtime on a plain dynamo export
        │                                            │   (TensorRT provider too on CUDA)
        │                                            │ ONNX Runtime + onnxruntime.transformers
        │                                            │   optimizer on the dynamo and TorchScript exports
        │                                            │ accelc, once per backend
        ├─ check each one's outputs against the reference on rotated seeded inputs
        └─ time them together: warm-up, then interleaved rounds until the time budget is spent
                 ─► BenchResult: median / p90 / min / max, throughput, build time, memory, error

What is measured, precisely:

* **Latency**: wall time of one call, device synchronised, on inputs rotated through the example
  and seeded random variants of it (:func:`accelc.verify.verification_inputs`). Systems run in
  interleaved rounds (:func:`accelc.timing.measure_interleaved`), so a noisy neighbour slows all of
  them alike; min/max show how noisy the machine was. Within a round each system takes a turn of
  about 50 ms whose first call is not counted: ONNX Runtime's and OpenMP's worker threads spin
  after a call and would otherwise slow whichever system runs next. ONNX Runtime gets the same intra-op thread
  count as torch.
* **Build time**: from the model to the first output: export, optimiser, session creation or
  compilation, and the first call (torch.compile compiles there).
* **Memory** on CPU is process RSS, so it is reported as growth: ``build_peak_mb`` is the peak RSS
  above the level before the system was built (the peak counter is reset through
  ``/proc/self/clear_refs``), ``retained_mb`` what the built system still holds (weight copies,
  compiled code, arenas), ``run_peak_mb`` the peak above that level over a few calls (activations,
  workspaces). Memory freed by an earlier system and reused by a later one hides some growth; the
  order of systems is fixed so runs compare with each other. On CUDA the same three numbers come
  from ``torch.cuda.max_memory_allocated`` (torch's allocator), plus ``device_used_mb`` from
  ``torch.cuda.mem_get_info`` which also sees ONNX Runtime's allocations.
* **Error**: the largest absolute (and magnitude-relative) difference from eager fp32 on the target
  device over every input set, and whether it is within accelc's tolerance for the precision.

A system that cannot be built or run is reported with a one-line reason (``failed``,
``skipped`` or ``unavailable``); it never stops the others.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import inspect
import io
import json
import logging
import math
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch._dynamo

from .errors import UserInputError
from .source import first_line
from .timing import measure_interleaved
from .verify import compare_outputs, tolerance, verification_inputs

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

# Groups the user can name with --against; each expands to concrete systems.
SYSTEM_GROUPS: dict[str, tuple[str, ...]] = {
    "eager": ("eager",),
    "compile": ("compile",),
    "onnxruntime": ("onnxruntime",),
    "ort-transformers": ("ort-transformers-dynamo", "ort-transformers-torchscript"),
    "accelc": ("accelc-torch", "accelc-onnxruntime"),
}
DEFAULT_SYSTEMS: tuple[str, ...] = tuple(SYSTEM_GROUPS)
ACCELC_BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
# Each system keeps the device for turns of this long; see accelc.timing.measure_interleaved.
TURN_SECONDS = 0.05
# Idle time before each turn, not timed: the previous system's spinning threads go back to sleep.
# Measured on ResNet-50 (2 cores): without it eager's median swung 100-153 ms between runs, with
# it 72-74 ms, since OpenMP/ORT threads left spinning stole the cores from the next system.
SETTLE_SECONDS = 0.03
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# model_type values from transformers configs that onnxruntime.transformers optimises under
# another name (same attention and layer-norm layout).
_ORT_MODEL_TYPE_ALIASES = {"roberta": "bert", "distilbert": "bert", "electra": "bert", "xlm-roberta": "bert", "deit": "vit"}


class SystemSkipped(Exception):
    """The system does not apply to this model (e.g. no optimizer for its architecture)."""


class SystemUnavailable(Exception):
    """The system is not installed or not implemented here."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class SystemResult:
    name: str
    status: str  # ok | failed | skipped | unavailable
    reason: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    iterations: int = 0
    throughput_per_s: float | None = None  # samples per second at the batch size
    build_s: float | None = None
    memory: dict = field(default_factory=dict)
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    within_tolerance: bool | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchResult:
    model: str
    device: str
    precision: str
    batch_size: int
    threads: int
    seconds: float
    input_shapes: list
    versions: dict
    machine: dict
    systems: list[SystemResult]
    memory_kind: str = "rss_growth"
    notes: list[str] = field(default_factory=list)

    def entry(self, name: str) -> SystemResult | None:
        return next((s for s in self.systems if s.name == name), None)

    def speedup(self, name: str, over: str = "eager") -> float | None:
        a, b = self.entry(name), self.entry(over)
        if a is None or b is None or not a.ok or not b.ok or not a.median_ms:
            return None
        return b.median_ms / a.median_ms

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict) -> "BenchResult":
        data = dict(data)
        data["systems"] = [SystemResult(**s) for s in data.get("systems", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# --------------------------------------------------------------------------------------------
# Progress


class ProgressBar:
    """A one-line text progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 28, prefix: str = ""):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.prefix = prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_line = ""
        self._last_step = None

    def __call__(self, message: str, fraction: float) -> None:
        fraction = min(1.0, max(0.0, fraction))
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.prefix}[{bar}] {fraction * 100:3.0f}% {message}"
        if self.tty:
            pad = max(0, len(self._last_line) - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._last_line = line
            return
        step = message.split(" round ")[0]  # one line per step, not per timing round
        if step != self._last_step:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_step = step

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\r" + " " * len(self._last_line) + "\r")
            self.stream.flush()
            self._last_line = ""


# --------------------------------------------------------------------------------------------
# Memory


_MB = 1024.0 * 1024.0


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS so RSS baselines mean something."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Growth of RSS (CPU) or of torch's CUDA allocations between ``start`` and the readings."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.can_reset = _reset_peak_rss() and _proc_status_kb("VmHWM") is not None
        self._rss0 = self._alloc0 = self._free0 = 0

    def start(self) -> None:
        _release_freed_memory()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._alloc0 = torch.cuda.memory_allocated()
            self._free0 = torch.cuda.mem_get_info()[0]
        if self.can_reset:
            _reset_peak_rss()
        self._rss0 = (_proc_status_kb("VmRSS") or 0) * 1024

    def peak_mb(self) -> float | None:
        if self.cuda:
            torch.cuda.synchronize()
            return round((torch.cuda.max_memory_allocated() - self._alloc0) / _MB, 1)
        if not self.can_reset:
            return None
        return round(((_proc_status_kb("VmHWM") or 0) * 1024 - self._rss0) / _MB, 1)

    def retained_mb(self) -> float:
        _release_freed_memory()
        if self.cuda:
            return round((torch.cuda.memory_allocated() - self._alloc0) / _MB, 1)
        return round(((_proc_status_kb("VmRSS") or 0) * 1024 - self._rss0) / _MB, 1)

    def device_used_mb(self) -> float | None:
        if not self.cuda:
            return None
        return round((self._free0 - torch.cuda.mem_get_info()[0]) / _MB, 1)


# --------------------------------------------------------------------------------------------
# Systems


@dataclass
class Built:
    """A runnable system: ``run(*inputs)`` for timing, ``outputs(raw)`` turns its result into tensors."""

    run: Callable
    inputs: list[tuple]  # the input sets in the form this system takes (dtype, device)
    outputs: Callable = lambda raw: raw
    note: str = ""


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


def _build_accelc(ctx: BenchContext, backend: str) -> Built:
    from .api import accelerate

    try:
        fast = accelerate(ctx.model, ctx.fp32_inputs[0], backend=backend, device=ctx.device, precision=ctx.precision)
    except Exception as exc:
        if backend != "torch":
            raise SystemUnavailable(_short_reason(exc)) from exc
        raise
    note = ""
    if fast.report.get("fallback"):
        note = f"fell back to eager: {fast.report['fallback']}"
    # accelc takes the fp32 model and lowers precision itself, so it gets the fp32 inputs.
    return Built(fast, ctx.fp32_inputs, note=note)


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


def _input_names(model: torch.nn.Module, count: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params][:count]
    except (TypeError, ValueError):
        names = []
    return names if len(names) == count else [f"input_{i}" for i in range(count)]


def _export_onnx(model: torch.nn.Module, inputs: tuple, path: str, dynamo: bool) -> None:
    names = _input_names(model, len(inputs))
    # The exporters print their steps (and the TorchScript one its whole graph on failure);
    # keep the terminal readable: the failure's first line becomes the system's reason.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, inputs, dynamo=True, input_names=names)
            program.save(path)
        else:
            torch.onnx.export(model, inputs, path, dynamo=False, input_names=names)


def _ort_providers(device: torch.device, provider: str | None) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    wanted = provider or "CUDAExecutionProvider"
    if wanted not in available:
        raise SystemUnavailable(f"onnxruntime has no {wanted} here (it has {', '.join(available)})")
    options = {"device_id": device.index or 0}
    chain = [(wanted, options)]
    if wanted != "CUDAExecutionProvider" and "CUDAExecutionProvider" in available:
        chain.append(("CUDAExecutionProvider", options))  # for the nodes TensorRT does not take
    return chain + ["CPUExecutionProvider"]


class OrtRunner:
    """Runs an InferenceSession on torch tensors: numpy feeds on CPU, IO binding on CUDA."""

    def __init__(self, session, names: list[str], device: torch.device):
        self.session = session
        session_inputs = [i.name for i in session.get_inputs()]
        if set(session_inputs) <= set(names):
            # The exporter may drop an input the graph does not use; feed the rest by name.
            self.feed = [(names.index(n), n) for n in session_inputs]
        else:
            self.feed = list(enumerate(session_inputs))
        self.output_names = [o.name for o in session.get_outputs()]
        self.device = device

    def __call__(self, *tensors):
        if self.device.type == "cpu":
            return self.session.run(None, {n: tensors[i].detach().numpy() for i, n in self.feed})
        binding = self.session.io_binding()
        index = self.device.index or 0
        for i, n in self.feed:
            t = tensors[i].contiguous()
            binding.bind_input(n, "cuda", index, _numpy_dtype(t.dtype), list(t.shape), t.data_ptr())
        for n in self.output_names:
            binding.bind_output(n, "cuda", index)
        self.session.run_with_iobinding(binding)
        return binding

    def to_torch(self, raw) -> list[torch.Tensor]:
        arrays = raw.copy_outputs_to_cpu() if self.device.type == "cuda" else raw
        return [torch.from_numpy(a) for a in arrays]


def _numpy_dtype(dtype: torch.dtype):
    return torch.empty((), dtype=dtype).numpy().dtype


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


def _ort_optimize(path: str, out_path: str, model_type: tuple[str, int, int], device: torch.device, opt_level: int | None) -> dict:
    """Run onnxruntime.transformers' optimizer; returns the counts of fused operators."""
    from onnxruntime.transformers.optimizer import optimize_model

    ort_type, heads, hidden = model_type
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(path, model_type=ort_type, num_heads=heads, hidden_size=hidden,
                                   opt_level=opt_level, use_gpu=device.type == "cuda")
    optimized.save_model_to_file(out_path)
    return {k: v for k, v in (optimized.get_fused_operator_statistics() or {}).items() if v}


def _ort_session(path: str, threads: int, providers: list):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the same thread count torch uses
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=providers)


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """One line, without ONNX Runtime's source paths, at most ``limit`` characters."""
    text = first_line(exc)
    if "ONNXRuntimeError" in text:
        text = re.sub(r"\S*onnxruntime_src/\S+\s*", "", text)
        text = re.sub(r"(\[ONNXRuntimeError\] : \d+ : \w+ : )+", "", text)
        text = re.sub(r"\S+\.cc:\d+ (\S+ )?", "", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _builders(names: list[str]) -> dict[str, Callable[[BenchContext], Built]]:
    table: dict[str, Callable[[BenchContext], Built]] = {
        "eager": _build_eager,
        "compile": _build_compile,
        "compile-max-autotune": lambda ctx: _build_compile(ctx, "max-autotune"),
        "compile-freezing": _build_compile_freezing,
        "compile-cudagraphs": lambda ctx: _build_compile(ctx, "reduce-overhead"),
        "onnxruntime": lambda ctx: _build_ort(ctx, "onnxruntime"),
        "onnxruntime-tensorrt": lambda ctx: _build_ort(ctx, "onnxruntime-tensorrt", provider="TensorrtExecutionProvider"),
        "ort-transformers-dynamo": lambda ctx: _build_ort(ctx, "ort-transformers-dynamo", optimize=True),
        "ort-transformers-torchscript": lambda ctx: _build_ort(ctx, "ort-transformers-torchscript", dynamo=False, optimize=True),
    }
    for backend in _accelc_backends():
        table[f"accelc-{backend}"] = lambda ctx, b=backend: _build_accelc(ctx, b)
    return {n: table[n] for n in names}


def _accelc_backends() -> tuple[str, ...]:
    from .api import BACKENDS

    extra = tuple(b for b in BACKENDS if b != "auto" and b not in ACCELC_BACKENDS)
    return ACCELC_BACKENDS + extra


def expand_systems(systems, max_autotune: bool = False, device: str | torch.device = "cpu") -> list[str]:
    """Expand group names (``compile``, ``accelc``, ...) into concrete systems, eager first, no repeats."""
    if isinstance(systems, str):
        systems = [s.strip() for s in systems.split(",") if s.strip()]
    concrete = {"compile-max-autotune", "compile-freezing", "compile-cudagraphs", "onnxruntime-tensorrt"} | {f"accelc-{b}" for b in _accelc_backends()}
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
    return out


# --------------------------------------------------------------------------------------------
# The benchmark


def _tolerance_for(precision: str):
    if precision == "fp32":
        return tolerance
    lowered = PRECISION_DTYPES[precision]
    return lambda dtype: tolerance(lowered) if dtype.is_floating_point else tolerance(dtype)


def _cast_inputs(inputs: tuple, device: torch.device, dtype: torch.dtype | None = None) -> tuple:
    def cast(x):
        if not isinstance(x, torch.Tensor):
            return x
        x = x.to(device)
        return x.to(dtype) if dtype is not None and x.is_floating_point() else x

    return tuple(cast(x) for x in inputs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch_size(inputs: tuple) -> int:
    first = next((x for x in inputs if isinstance(x, torch.Tensor) and x.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


def _versions() -> dict:
    from . import __version__

    versions = {"accelc": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnxruntime", "onnx", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # an optional peer that is missing is reported as such
            versions[name] = None
    return versions


def _machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_bench(
    model: torch.nn.Module,
    inputs: tuple,
    systems=DEFAULT_SYSTEMS,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    max_autotune: bool = False,
    seconds: float = 5.0,
    warmup: int = 3,
    min_iterations: int = 5,
    max_iterations: int = 1000,
    input_variants: int = 2,
    seed: int = 0,
    model_name: str = "",
    progress: Progress | None = None,
) -> BenchResult:
    """Build every system in ``systems`` on ``model``/``inputs`` and time them side by side.

    ``systems`` holds group names (:data:`SYSTEM_GROUPS`) or concrete system names; eager is
    always measured (it is the reference). ``seconds`` is the timing budget shared by all systems
    (interleaved rounds), after ``warmup`` calls each; at least ``min_iterations`` rounds run.
    """
    from .loader import normalize_inputs
    from .runtime.torch import resolve_device

    progress = progress or (lambda message, fraction: None)
    if precision not in PRECISION_DTYPES:
        raise UserInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_DTYPES)}")
    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"run_bench() needs a torch.nn.Module, got {type(model).__name__}")
    dev = resolve_device(device)
    names = expand_systems(systems, max_autotune, dev)
    builders = _builders(names)
    inputs = normalize_inputs(inputs)
    dtype = PRECISION_DTYPES[precision]
    threads = torch.get_num_threads()

    model = model.eval()
    ref_model = model if dev.type == "cpu" else copy.deepcopy(model).to(dev)
    fp32_sets = [_cast_inputs(x, dev) for x in verification_inputs(inputs, count=input_variants, seed=seed)]
    progress("computing eager fp32 reference outputs", 0.0)
    with torch.inference_mode():
        references = [_to_cpu(ref_model(*x)) for x in fp32_sets]
    eager_model = ref_model if precision == "fp32" else copy.deepcopy(ref_model).to(dtype)
    # Dynamo's caches outlive a run; a batch size seen before would make it compile dynamically.
    torch._dynamo.reset()

    _preload(names)
    results: dict[str, SystemResult] = {}
    built: dict[str, Built] = {}
    probe = MemoryProbe(dev)
    tol = _tolerance_for(precision)
    with tempfile.TemporaryDirectory(prefix="accelc-bench-") as tmpdir:
        ctx = BenchContext(ref_model, eager_model, fp32_sets,
                           [_cast_inputs(x, dev, dtype) for x in fp32_sets], dev, precision, tmpdir, threads)
        for k, name in enumerate(names):
            progress(f"building {name}", 0.7 * k / len(names))
            result, system = _build_one(name, builders[name], ctx, probe, references, tol)
            results[name] = result
            if system is not None:
                built[name] = system
        progress("warming up", 0.7)
        timings = {}
        other_load = OtherLoad()
        if built:
            timings = measure_interleaved(
                {n: (lambda i, b=b: b.run(*b.inputs[i])) for n, b in built.items()},
                [(i,) for i in range(len(fp32_sets))],
                seconds=seconds, warmup=warmup, min_iterations=min_iterations,
                max_iterations=max_iterations, device=dev, turn_seconds=TURN_SECONDS, settle_seconds=SETTLE_SECONDS,
                on_progress=lambda message, fraction: progress(message, 0.7 + 0.3 * fraction),
            )
    batch = _batch_size(inputs)
    for name, t in timings.items():
        r = results[name]
        r.median_ms, r.p90_ms, r.min_ms, r.max_ms, r.iterations = (
            round(t.median_ms, 4), round(t.p90_ms, 4), round(t.min_ms, 4), round(t.max_ms, 4), t.iterations)
        r.throughput_per_s = round(batch / (t.median_ms / 1e3), 2) if t.median_ms > 0 else None
    progress("done", 1.0)
    notes = [f"timing budget {seconds:g} s shared by {len(built)} systems in interleaved rounds after {warmup} warm-up calls each"]
    busy = other_load.note()
    if busy:
        notes.append(busy)
    return BenchResult(
        model=model_name or type(model).__name__, device=str(dev), precision=precision, batch_size=batch,
        threads=threads, seconds=seconds,
        input_shapes=[[str(x.dtype).replace("torch.", ""), list(x.shape)] for x in inputs if isinstance(x, torch.Tensor)],
        versions=_versions(), machine=_machine(dev), systems=[results[n] for n in names],
        memory_kind="cuda_allocated_growth" if dev.type == "cuda" else ("rss_growth" if probe.can_reset else "rss_retained_only"),
        notes=notes,
    )


def _preload(names: list[str]) -> None:
    """Import each system's libraries up front, so no system's memory growth includes an import."""
    modules = []
    if any(n.startswith("compile") for n in names):
        modules.append("torch._inductor.compile_fx")
    if any(n.startswith(("onnxruntime", "ort-")) for n in names):
        modules += ["onnxruntime", "onnxscript", "torch.onnx._internal.exporter._core"]
    if any(n.startswith("ort-transformers") for n in names):
        modules.append("onnxruntime.transformers.optimizer")
    if any(n.startswith("accelc-") for n in names):
        modules += ["accelc.api", "accelc.capture"]
    for name in modules:
        try:
            __import__(name)
        except Exception:  # a missing library shows up as that system's failure instead
            log.debug("bench: could not preload %s", name, exc_info=True)


class OtherLoad:
    """CPU time other processes used while we timed, from /proc/stat minus this process's own.

    The load average cannot tell: it counts this benchmark's own threads and the build that ran
    before the timing. What matters is whether anything else took cores during the timed rounds.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def note(self) -> str:
        end = self._sample()
        if self.start is None or end is None:
            return ""
        wall = end[2] - self.start[2]
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        cores = os.cpu_count() or 1
        if wall <= 0 or other / wall < 0.25:  # other processes kept less than a quarter core busy
            return ""
        return (f"warning: other processes used {other / wall:.1f} of {cores} cores while this was timed; "
                "multi-threaded kernels stall when their threads are descheduled, so latencies are unreliable")


def _to_cpu(outputs):
    return torch.utils._pytree.tree_map(lambda x: x.detach().cpu() if isinstance(x, torch.Tensor) else x, outputs)


def _build_one(name, builder, ctx: BenchContext, probe: MemoryProbe, references: list, tol) -> tuple[SystemResult, Built | None]:
    """Build ``name``, run it once (counted in the build time), check it, measure its memory."""
    probe.start()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            system = builder(ctx)
            with torch.inference_mode():
                first = system.run(*system.inputs[0])
            _sync(ctx.device)
        build_s = time.perf_counter() - start
        memory = {"build_peak_mb": probe.peak_mb(), "retained_mb": probe.retained_mb()}
        if probe.cuda:
            memory["device_used_mb"] = probe.device_used_mb()
        worst_abs = worst_rel = 0.0
        within = True
        with torch.inference_mode():
            for i, ref in enumerate(references):
                raw = first if i == 0 else system.run(*system.inputs[i])
                cmp = compare_outputs(_to_cpu(system.outputs(raw)), ref, tol)
                worst_abs, worst_rel = max(worst_abs, cmp.max_abs_error), max(worst_rel, cmp.max_rel_error)
                within = within and cmp.ok
                if not cmp.ok and not math.isfinite(cmp.max_abs_error):
                    raise RuntimeError(f"outputs do not match eager's: {cmp.message}")
            probe.start()
            for x in system.inputs:
                system.run(*x)
            _sync(ctx.device)
        memory["run_peak_mb"] = probe.peak_mb()
    except SystemSkipped as exc:
        return SystemResult(name, "skipped", reason=str(exc)), None
    except SystemUnavailable as exc:
        return SystemResult(name, "unavailable", reason=str(exc)), None
    except Exception as exc:  # any failure of one system is its row's reason, never a crash
        log.debug("bench: %s failed", name, exc_info=True)
        return SystemResult(name, "failed", reason=_short_reason(exc)), None
    return SystemResult(
        name, "ok", build_s=round(build_s, 3), memory=memory, max_abs_error=_finite(worst_abs),
        max_rel_error=_finite(worst_rel), within_tolerance=within, note=system.note,
    ), system


def _finite(value: float) -> float | None:
    return float(f"{value:.3g}") if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Output


def format_table(result: BenchResult) -> str:
    """The terminal table: one row per system, then the reasons for rows without numbers."""
    eager = result.entry("eager")
    header = ["system", "median ms", "p90 ms", "min-max ms", "samples/s", "vs eager", "build s", "mem MB", "max err", ""]
    rows = []
    for s in result.systems:
        if not s.ok:
            rows.append([s.name, s.status, "", "", "", "", "", "", "", ""])
            continue
        speed = result.speedup(s.name) if eager is not None and eager.ok else None
        mem = s.memory.get("retained_mb")
        peak = s.memory.get("build_peak_mb")
        mem_text = "" if mem is None else f"{mem:.0f}" + (f" (peak {peak:.0f})" if peak is not None else "")
        flag = "" if s.within_tolerance else "out of tolerance"
        rows.append([
            s.name, f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.min_ms:.3f}-{s.max_ms:.3f}",
            f"{s.throughput_per_s:,.1f}" if s.throughput_per_s else "", f"{speed:.2f}x" if speed else "",
            f"{s.build_s:.1f}", mem_text, f"{s.max_abs_error:.2g}" if s.max_abs_error is not None else "", flag,
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = {1, 2, 3, 4, 5, 6, 7, 8}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    shapes = ", ".join(f"{d}{tuple(s)}" for d, s in result.input_shapes)
    out = [
        f"{result.model} on {result.device} ({result.precision}), batch {result.batch_size}, "
        f"{result.threads} threads, inputs {shapes}",
        line(header), line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    reasons = [f"  {s.name}: {s.status}: {s.reason}" for s in result.systems if not s.ok]
    notes = [f"  {s.name}: {s.note}" for s in result.systems if s.ok and s.note]
    if reasons:
        out += ["", "not measured:"] + reasons
    if notes:
        out += ["", "notes:"] + notes
    mem_kind = {"rss_growth": "RSS growth while built (peak while building)",
                "rss_retained_only": "RSS growth while built (peak unavailable on this OS)",
                "cuda_allocated_growth": "CUDA memory allocated by torch (peak while building)"}[result.memory_kind]
    out += ["", f"mem MB: {mem_kind}; max err: largest |output - eager fp32| over the example and its seeded variants"]
    out += [f"{n}" for n in result.notes]
    return "\n".join(out)


def bench_main(args) -> int:
    """`accelc bench model.py [--against ...] [--json FILE] [--device] [--precision] [--max-autotune]`.

    ``args`` is an argparse Namespace with ``model`` (path), ``against`` (comma-separated systems
    or None for all), ``json`` (path or None), ``device``, ``precision``, ``max_autotune`` and
    optionally ``seconds``. Typed accelc errors (bad model file, unknown system) propagate for the
    CLI to print.
    """
    from .loader import load_model_file

    against = getattr(args, "against", None) or ",".join(DEFAULT_SYSTEMS)
    requested = [s.strip() for s in against.split(",") if s.strip()]
    if not any(s == "accelc" or s.startswith("accelc-") for s in requested):
        requested.append("accelc")  # the point of the table is accelc next to the others
    device = getattr(args, "device", None) or "cpu"
    max_autotune = bool(getattr(args, "max_autotune", False))
    expand_systems(requested, max_autotune, device)  # fail fast on an unknown name
    loaded = load_model_file(args.model)
    bar = ProgressBar()
    try:
        result = run_bench(
            loaded.module, loaded.inputs, systems=requested, device=device,
            precision=getattr(args, "precision", None) or "fp32", max_autotune=max_autotune,
            seconds=float(getattr(args, "seconds", None) or 5.0), model_name=os.path.basename(args.model),
            progress=bar,
        )
    finally:
        bar.close()
    print(format_table(result))
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            f.write(result.to_json() + "\n")
        print(f"wrote {args.json}")
    return 0


__all__ = ["run_bench", "format_table", "bench_main", "BenchResult", "SystemResult", "ProgressBar",
           "expand_systems", "SYSTEM_GROUPS", "DEFAULT_SYSTEMS"]
