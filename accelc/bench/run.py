"""One bench run from start to finish: :func:`run_bench` computes eager's reference outputs,
builds each system in turn (:func:`_build_one`: build time, first output, memory, error against
the reference), times the built ones together in interleaved rounds and collects a
:class:`~accelc.bench.results.BenchResult`; :func:`bench_main` is the ``accelc bench`` command
around it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
import torch._dynamo

from ..errors import UserInputError
from ..timing import measure_interleaved
from ..verify import compare_outputs, tolerance_for_precision, verification_inputs
from .memory import MemoryProbe, OtherLoad
from .ort import _short_reason
from .results import BenchResult, ProgressBar, SystemResult, print_table
from .systems import DEFAULT_SYSTEMS, BenchContext, Built, SystemSkipped, SystemUnavailable, _builders, expand_systems

# Logged as "accelc.bench", the name it had before bench.py became this package.
log = logging.getLogger(__package__)

Progress = Callable[[str, float], None]

# Each system keeps the device for turns of this long; see accelc.timing.measure_interleaved.
TURN_SECONDS = 0.05
# Idle time before each turn, not timed: the previous system's spinning threads go back to sleep.
# Measured on ResNet-50 (2 cores): without it eager's median swung 100-153 ms between runs, with
# it 72-74 ms, since OpenMP/ORT threads left spinning stole the cores from the next system.
SETTLE_SECONDS = 0.03
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _looser_precision(a: str, b: str | None) -> str:
    """Of the bench's precision and a system's own, the one with the looser tolerance."""
    order = ("fp32", "fp16", "bf16", "int8")
    return a if b not in order or order.index(a) >= order.index(b) else b


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
    from .. import __version__

    versions = {"accelc": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnxruntime", "onnx", "transformers", "openvino"):
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
    from ..loader import normalize_inputs
    from ..runtime.torch import resolve_device

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
    tol = tolerance_for_precision(precision)
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
    if any(n.startswith("openvino") for n in names):
        modules += ["openvino", "openvino.frontend.pytorch.ts_decoder"]
    if any(n.startswith("accelc-") for n in names):
        modules += ["accelc.api", "accelc.capture"]
    for name in modules:
        try:
            __import__(name)
        except Exception:  # a missing library shows up as that system's failure instead
            log.debug("bench: could not preload %s", name, exc_info=True)
    if any(n.startswith("openvino") for n in names):
        try:
            from .openvino import load_plugins

            load_plugins()  # OpenVINO loads its CPU plugin library on first use
        except Exception:
            log.debug("bench: could not load OpenVINO's plugins", exc_info=True)


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
        worst_abs = worst_rel = worst_relative = 0.0
        within = True
        if system.precision is not None:  # a system that runs at its own precision (bf16, say)
            tol = tolerance_for_precision(_looser_precision(ctx.precision, system.precision))
        with torch.inference_mode():
            for i, ref in enumerate(references):
                raw = first if i == 0 else system.run(*system.inputs[i])
                cmp = compare_outputs(_to_cpu(system.outputs(raw)), ref, tol)
                worst_abs, worst_rel = max(worst_abs, cmp.max_abs_error), max(worst_rel, cmp.max_rel_error)
                worst_relative = max(worst_relative, cmp.relative_error)
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
        max_rel_error=_finite(worst_rel), relative_error=_finite(worst_relative), within_tolerance=within,
        note=system.note,
    ), system


def _finite(value: float) -> float | None:
    return float(f"{value:.3g}") if math.isfinite(value) else None


def bench_main(args) -> int:
    """`accelc bench model.py [--against ...] [--json FILE] [--device] [--precision] [--max-autotune]`.

    ``args`` is an argparse Namespace with ``model`` (path), ``against`` (comma-separated systems
    or None for all), ``json`` (path or None), ``device``, ``precision``, ``max_autotune`` and
    optionally ``seconds``. Typed accelc errors (bad model file, unknown system) propagate for the
    CLI to print.
    """
    from ..loader import load_model_file

    against = getattr(args, "against", None) or ",".join(DEFAULT_SYSTEMS)
    requested = [s.strip() for s in against.split(",") if s.strip()]
    if not any(s == "accelc" or s.startswith("accelc-") for s in requested):
        requested.append("accelc")  # the point of the table is accelc next to the others
    device = getattr(args, "device", None) or "cpu"
    max_autotune = bool(getattr(args, "max_autotune", False))
    expand_systems(requested, max_autotune, device)  # fail fast on an unknown name
    loaded = load_model_file(args.model, batch=getattr(args, "batch", None), seq=getattr(args, "seq", None))
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
    print_table(result)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            f.write(result.to_json() + "\n")
        print(f"wrote {args.json}")
    return 0
