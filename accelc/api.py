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
from dataclasses import asdict, dataclass

import torch

from . import __version__
from .backends import (RUNTIME_WORDS, auto_candidates, check_openvino_request, check_precision_request, choose_precision,
                       remembered_key, select_runtime)
from .capture import capture, count_compute_nodes
from . import decisions
from .errors import ModelRunError, UserInputError
from .loader import normalize_inputs
from .module import AcceleratedModule
from .pass_base import PassContext
from .pass_manager import FIRED, PassManager
from .pipeline import lower, stage_passes
from .registry import Registry
from .cpu import cpu_has_native_bf16
from .runtime.torch import resolve_device, to_device
from .shapes import (DynamicChoice, Signature, auto_dynamic_shapes, capture_dims, grow, inputs_at, parse_dynamic,
                     placeholder_names, signature_from_graph, static_signature, verified_ties)
from .source import exception_location, first_line, quoted_line
from .stages import GRAPH, LOWERING, ONNX, PRECISION_PASS, build_pipeline
from .index_bounds import bounded_signature
from .timing import build_phase
from .verify import Verifier, compare_outputs, per_pass_indices, run_detached, tolerance_for_precision
from .verify import tolerance as dtype_tolerance

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")


def graph_precision(precision: str) -> str:
    """The precision the fx graph itself runs at: int8 is ONNX Runtime's dynamic quantisation,
    applied to the exported model, so the fx passes run (and are verified) at fp32; ``auto``
    starts from the fp32 graph and lowers each candidate from it (accelc.backends)."""
    return "fp32" if precision in ("int8", "auto") else precision


def calibration_inputs(calibration, inputs: tuple, precision: str) -> list[tuple]:
    """``calibration`` as a list of input sets shaped like ``inputs`` (same count, dtypes and
    ranks; sizes are checked against the captured signature later); a clear error otherwise."""
    if calibration is None:
        return []
    if precision not in ("int8", "auto"):
        raise UserInputError("calibration inputs set the activation ranges of int8 convolutions: use them with "
                             "--precision int8 or auto, or drop them")
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, (list, tuple)) or not calibration:
        raise UserInputError("calibration must be a non-empty list of input sets, each like the example inputs "
                             "(a tensor or a tuple of tensors)")
    sets = []
    for index, raw in enumerate(calibration):
        try:
            one = normalize_inputs(raw, source=f"calibration set {index}")
        except Exception as exc:
            raise UserInputError(str(exc)) from None
        if len(one) != len(inputs) or any(a.dtype != b.dtype or a.dim() != b.dim() for a, b in zip(one, inputs)):
            shapes = ", ".join(f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}" for t in one)
            raise UserInputError(f"calibration set {index} is ({shapes}); each set needs the example's inputs: "
                                 f"{len(inputs)} tensors of the same dtypes and ranks")
        sets.append(one)
    return sets


def load(path: str, device: str | None = None) -> AcceleratedModule:
    """Load an artifact folder written by :meth:`AcceleratedModule.save`."""
    return AcceleratedModule.load(path, device)


def accelerate(
    model: torch.nn.Module,
    inputs,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tolerance: float | None = None,
    calibration=None,
    passes: list[str] | None = None,
    disable: list[str] | None = None,
    verify: bool = True,
    measure: bool = False,
    dynamic=None,
    static: bool = False,
    stages: int | None = None,
    devices: list[str] | None = None,
    microbatches: int = 1,
    profile: bool = False,
    branches: int | None = None,
    source_file: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> AcceleratedModule:
    """Capture ``model`` on ``inputs``, optimise and verify it, and return a faster equivalent.

    ``dynamic`` says which sizes may vary between calls: None (the default) infers them from the
    inputs (batch; sequence of token inputs; image height/width) and keeps those the model allows;
    a dict narrows or pins them, e.g. ``{"seq": (1, 512), "height": False}``; False (or
    ``static=True``) pins every size to the example's.

    ``calibration`` (``precision="int8"`` or ``"auto"``): input sets like the real ones, each shaped
    as ``inputs``; int8 convolutions fix their activation ranges from them and the example
    (without them convolutions stay fp32). See ``passes/onnx/quantize_conv_int8.py``.

    ``dry_run`` (what :func:`explain` uses) stops after the graph and lowering stages: nothing is
    exported or timed, the ONNX stage is listed, not run, and the eager model is returned.
    """
    progress = on_progress or (lambda message: None)
    started = time.perf_counter()
    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"accelerate() needs a torch.nn.Module, got {type(model).__name__}")
    if backend not in BACKENDS:
        raise UserInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if branches and (stages or devices):
        raise UserInputError("--branches and --stages/--devices are two ways to split one graph; use one of them")
    if branches is not None and branches < 1:
        raise UserInputError(f"--branches needs at least 1 worker thread, got {branches}")
    if stages is not None and stages < 1:
        raise UserInputError(f"--stages needs at least 1 stage, got {stages}")
    if microbatches < 1:
        raise UserInputError(f"--microbatches needs at least 1, got {microbatches}")
    for given, name in ((microbatches > 1, f"--microbatches {microbatches}"), (profile, "--profile")):
        if given and not (stages or devices):
            raise UserInputError(f"{name} applies to a graph cut into stages: add --stages N (or --devices), or drop it")
    choice = parse_dynamic(False if static else dynamic)
    dev = resolve_device(device)
    for stage_device in devices or ():
        resolve_device(stage_device)  # a device that is not there is the user's error now, not after capture
    split = bool(stages or devices or branches)
    if precision == "int8" and (backend == "torch" or dev.type != "cpu" or split):
        raise UserInputError("--precision int8 is ONNX Runtime's dynamic quantisation on the CPU: use it with "
                             "--backend onnxruntime (or auto) on --device cpu, without --stages/--devices/--branches")
    if backend == "openvino":
        check_openvino_request(dev, precision, split)
    if precision == "auto":
        tolerance = check_precision_request(dev, backend, split, tolerance)
    elif tolerance is not None:
        raise UserInputError("--tolerance is the error --precision auto may accept; add --precision auto or drop it")
    registry = Registry.discover()
    pipeline = build_pipeline(registry, dev.type, passes, disable)
    # Every pass a stage will run is loaded now, before any capture: a bad name or a broken plugin
    # is the user's error at once, not after minutes of work.
    stage_pass = {GRAPH: stage_passes(registry, pipeline, GRAPH), LOWERING: stage_passes(registry, pipeline, LOWERING),
                  ONNX: stage_passes(registry, pipeline, ONNX) if backend in ("auto", "onnxruntime") and not split
                  else []}
    inputs = to_device(normalize_inputs(inputs), dev)
    calibration_sets = [to_device(c, dev) for c in calibration_inputs(calibration, inputs, precision)]
    if microbatches > 1:
        microbatch_inputs(inputs, microbatches)  # validates the split before any work

    model = working_model(model, dev)
    report = _new_report(backend, dev, precision, source_file)
    report["pipeline"] = pipeline.as_dict()
    report["warnings"] += pipeline.notes
    if precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
        report["warnings"].append("this CPU has no native bf16 instructions (avx512_bf16/amx_bf16): bf16 matmuls "
                                  "are emulated and usually slower than fp32 here")
        log.warning("accelc: %s", report["warnings"][-1])
    progress("running the model eagerly")
    with build_phase(report, "eager run"):
        example_answer = run_eagerly(model, inputs, source_file)

    full_inputs = inputs
    if microbatches > 1 and not choice.wants("batch"):
        # A graph with a static batch runs once per micro-batch at one size: capture at that size.
        # (A dynamic batch is captured at the example's and runs at any micro-batch size.)
        inputs = microbatch_inputs(inputs, microbatches)
    progress("capturing with torch.export")
    start = time.perf_counter()
    with build_phase(report, "capture"):
        cap, signature = capture_with_signature(model, inputs, choice, source_file, report)
    report["capture"] = {
        "method": cap.method, "ok": cap.ok, "seconds": round(time.perf_counter() - start, 3),
        "failure": cap.failure, "location": cap.location, "attempts": cap.attempts,
    }
    if not cap.ok:
        report["fallback"] = capture_failure(cap)
        log.warning("accelc: %s", report["fallback"])
        return AcceleratedModule(model, report, eager=model)

    report["nodes"] = {"before": count_compute_nodes(cap.graph_module)}
    outputs = cap.graph_module.meta["accelc_outputs"]
    for index, calibration_set in enumerate(calibration_sets):
        why = signature.mismatch(calibration_set)
        if why is not None:
            raise UserInputError(f"calibration set {index}: {why}")
    ctx = PassContext(device=dev, precision=graph_precision(precision), example_inputs=inputs,
                      calibration_inputs=calibration_sets)
    progress("verifying the captured graph")
    with build_phase(report, "eager references"):
        signature, reference = eager_reference(model, cap.graph_module, inputs, signature, report,
                                               example_answer if inputs is full_inputs else None)
    # Calls past an embedding table are refused, not left to a runtime that would answer them.
    # Bounded after the references are drawn: a position table's 1024 rows would otherwise move
    # the largest probe from twice the example to 1024 (GPT-2 b8: 17 GB and minutes of checks).
    signature, notes = bounded_signature(signature, cap.graph_module)
    report["dynamic_narrowed"].extend(notes)
    verified_at = _verified_points(reference, signature)
    # Sizes of one axis in two inputs (a batch and a mask's batch) are served only as verified: equal.
    signature = verified_ties(signature, verified_at)
    report["dynamic"] = signature.as_dict() | {"requested": choice.as_dict(),
                                               "verified_at": verified_at,
                                               "narrowed": report.pop("dynamic_narrowed")}
    optimised = optimise_captured(cap.graph_module, reference, stage_pass[GRAPH], ctx, verify, progress, report)
    if optimised.records is not None:
        report["passes"] = [r.as_dict() for r in optimised.records]
        report["refusals"] = [asdict(r) for r in ctx.refusals]
        report["nodes"]["after"] = count_compute_nodes(optimised.gm)
        report["verification"] = optimised.final
    if optimised.failure:
        report["fallback"] = f"{optimised.failure}; running eagerly"
        log.warning("accelc: %s", report["fallback"])
        return AcceleratedModule(model, report, eager=model)
    gm = optimised.gm
    # What each runtime is checked with: int8 by its own bar (ORT quantises the export);
    # precision="auto" checks each candidate at its precision (accelc.backends).
    checker = reference.with_tolerance(tolerance_for_precision("fp32" if precision == "auto" else precision))
    if dry_run:
        return _dry_run(model, gm, inputs, backend, dev, ctx, pipeline, stage_pass, signature, report, progress)

    if branches:
        runner = branch_parallel_runtime(model, gm, branches, checker, report, progress)
    elif stages or devices:
        runner = partitioned_runtime(model, gm, full_inputs, stages, devices, microbatches, profile, checker, report,
                                     progress)
    elif precision == "auto":
        runner, gm = choose_precision(gm, inputs, backend, dev, ctx, stage_pass, signature, reference, report, progress,
                                      tolerance, lowering_reference=optimised.own_answers)
    else:
        runner = select_runtime(gm, inputs, backend, dev, ctx, stage_pass, signature, checker, report, progress,
                                fp32_gm=optimised.fp32_gm, lowering_reference=optimised.own_answers)
    report["refusals"] = [asdict(r) for r in ctx.refusals]
    if runner is None:  # no runtime of the graph matched eager on every set: report["fallback"] says where
        log.warning("accelc: %s", report["fallback"])
        return AcceleratedModule(model, report, eager=model)
    fast = AcceleratedModule(runner, report, gm, inputs, signature, outputs, eager=model)
    report["build_seconds"]["total"] = round(time.perf_counter() - started, 3)
    if measure:
        progress("timing eager vs accelc")
        # At the batch the user gave: a pipelined run is called with the whole batch, not one micro-batch.
        report["latency"] = measure_latency(model, fast, full_inputs, dev)
        for slower in (slower_than_eager(report), slower_than_options(report)):
            if slower:
                report["warnings"].append(slower)
                log.warning("accelc: %s", slower)
    return fast


def slower_than_eager(report: dict) -> str | None:
    """The warning for a result that measured slower than the eager model, with what would help."""
    speedup = (report.get("latency") or {}).get("speedup")
    if speedup is None or speedup >= 1.0:
        return None
    if report.get("partition") or report.get("branches"):
        kind = "--stages/--devices" if report.get("partition") else "--branches"
        hint = (f"the hand-offs between {kind} workers cost more than they save here; they pay off with more "
                "cores per worker, separate devices or larger batches; without it accelc runs one graph")
    else:
        hint = "eager is the faster choice for this model on this machine"
    return f"the saved result measured slower than eager ({speedup:.2f}x eager's speed): {hint}"


def slower_than_options(report: dict) -> str | None:
    """The warning for a saved result that measured slower than a backend ``auto`` timed and
    did not keep (separate measurements: past the noise margin only)."""
    from .timing import SLOWER_MARGIN

    accelc_ms = ((report.get("latency") or {}).get("accelc") or {}).get("median_ms")
    choice = dict(report.get("backend_choice") or {})
    chosen = choice.pop("chosen", None)
    faster = {name: ms for name, ms in choice.items()
              if name != chosen and accelc_ms and accelc_ms > ms * SLOWER_MARGIN}
    if not faster:
        return None
    name, ms = min(faster.items(), key=lambda item: item[1])
    return (f"the saved result measured {accelc_ms:.3g} ms, slower than {name} ({ms:.3g} ms) when auto timed both; "
            f"the machine may be noisy: time again with `accelc run`, or pass --backend {name}")


def explain(model: torch.nn.Module, inputs, **options) -> dict:
    """A dry run of :func:`accelerate` (same options): the report of capture, the graph and
    lowering stages with what fired, what was refused and why, and what the ONNX stage and
    ``backend="auto"`` would do; nothing is exported, built or timed."""
    return accelerate(model, inputs, measure=False, dry_run=True, **options).report


def _dry_run(model, gm, inputs, backend: str, device, ctx: PassContext, pipeline, stage_pass: dict,
             signature: Signature, report: dict, progress) -> AcceleratedModule:
    lowered, records = lower(gm, device, inputs, stage_pass[LOWERING], signature, progress, ctx.refusals)
    report["runtime_lowering"] = [r.as_dict() for r in records]
    report["refusals"] = [asdict(r) for r in ctx.refusals]
    dry = {}
    if backend in ("onnxruntime", "openvino"):
        dry["lowering"] = (f"the lowering stage runs only if {RUNTIME_WORDS[backend]} cannot be built or disagrees "
                           "with eager: the PyTorch runtime is then what serves")
    if backend in ("auto", "onnxruntime"):
        dry["onnx_stage"] = pipeline.names(ONNX)
        dry["onnx_why"] = ("which of these fire needs the ONNX export (tens of seconds for a large model); "
                           "`accelc optimize --backend onnxruntime` runs them and the report lists each")
    if backend == "openvino":
        dry["openvino"] = ("OpenVINO would convert the graph stage's fp32 output (its ONNX export) and compile it "
                           f"for its CPU plugin at {report['precision']}, then check it against eager")
    if backend == "auto":
        precision = graph_precision(report["precision"])
        candidates = auto_candidates(device, precision, report)
        runtimes = ", ".join(RUNTIME_WORDS[n] for n in ["torch"] + candidates)
        dry["auto"] = (f"auto would build {runtimes}, check each against eager, and keep the fastest in an "
                       "interleaved timing once it matches eager on every input set")
        # The precision select_runtime would see: int8 stays int8 (nothing remembered); auto starts at fp32.
        key = remembered_key(gm, inputs, device, "int8" if report["precision"] == "int8" else precision, candidates,
                             stage_pass, signature)
        entry = None if key is None else decisions.recall(key, candidates)
        if entry is not None:
            dry["auto"] = (f"auto would build {RUNTIME_WORDS[entry['chosen']]} alone and check it against eager on "
                           "every input set: it timed fastest at an earlier build of this graph on this machine "
                           "(ACCELC_CACHE_DIR=off times every runtime again)")
    report["dry_run"] = dry
    return AcceleratedModule(model, report, eager=model)


def capture_failure(cap) -> str:
    """Why the model was not captured: the user's line and what to do first, torch's detail last."""
    where = f" at {cap.location}" if cap.location else ""
    code = quoted_line(cap.location)
    quoted = f" (`{code}`)" if code else ""
    detail = cap.failure or ""
    if "data-dependent" in detail.lower() or "GuardOnDataDependent" in detail:
        fix = ("a branch or size there depends on a tensor's values: write it with torch.cond, or compute it "
               "outside the model")
    else:
        fix = "make that code traceable by torch.export"
    return f"could not capture the model{where}{quoted}: {fix} (torch.export said: {detail}); running it eagerly"


def working_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model to capture and to answer eagerly: the user's own when it is already in eval mode
    on ``device``, else a copy made so. accelc never changes the user's model (its mode, its
    device, its weights)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors) and not any(m.training for m in model.modules()):
        return model
    import copy

    return copy.deepcopy(model).eval().to(device)


def capture_with_signature(model, inputs: tuple, choice: DynamicChoice, source_file: str | None, report: dict):
    """Capture with every candidate size symbolic (``accelc.shapes``); returns the capture and the
    :class:`Signature` it serves. A model that will not capture that way is captured at the
    example's shapes, and the report says why."""
    dims = capture_dims(inputs, choice)
    if any(dims):
        cap = capture(model, grow(inputs, dims), source_file, dynamic_shapes=auto_dynamic_shapes(dims))
        if cap.ok:
            signature = signature_from_graph(cap.graph_module, inputs, dims, choice)
            if not _pins_a_grown_size(signature, inputs, dims):
                return cap, signature
            why = "the graph pins a size the example has at 1"
        else:
            why = cap.failure
        report["warnings"].append(f"the model did not capture with dynamic sizes ({why}); it is specialised to the "
                                  "example's shapes, and calls at other shapes run eagerly")
        log.warning("accelc: %s", report["warnings"][-1])
    cap = capture(model, inputs, source_file)
    return cap, (static_signature(placeholder_names(cap.graph_module), inputs) if cap.ok else None)


def _pins_a_grown_size(signature: Signature, inputs: tuple, dims) -> bool:
    """A candidate grown from 1 to 2 for the capture that the graph kept static serves size 2 only."""
    return any(isinstance(spec.shape[d], int) and x.shape[d] == 1
               for spec, x, per in zip(signature.inputs, inputs, dims) for d in per)


def eager_reference(model, gm, inputs: tuple, signature: Signature, report: dict,
                    example_answer=None) -> tuple[Signature, "Verifier"]:
    """Eager's outputs on every verification input set, computed once for the whole build
    (``example_answer``: eager's on ``inputs`` themselves, when the caller has it).

    Where eager itself cannot run a probe (an image too small for the network), or the captured
    graph disagrees with eager only where a size is 1 (torch.export assumes sizes of at least 2),
    the range is narrowed to what can be verified, and the report says so.
    """
    from .verify import verification_inputs

    notes = report.setdefault("dynamic_narrowed", [])
    for _ in range(len(signature.ranges) * 2 + 1):
        sets = verification_inputs(inputs, count=3, seed=1234, signature=signature, final=True)
        refs = [example_answer if i == 0 and example_answer is not None else _eager_or_error(model, x)
                for i, x in enumerate(sets)]
        narrowed = _narrow_to_verified(sets, refs, model, gm, inputs, signature)
        if narrowed is None:
            break
        signature, why = narrowed
        notes.append(why)
        log.info("accelc: dynamic sizes narrowed: %s", why)
    kept = [(x, ref) for x, ref in zip(sets, refs) if not isinstance(ref, Exception)]
    return signature, Verifier([x for x, _ in kept], [ref for _, ref in kept])


def _eager_or_error(model, inputs: tuple):
    try:
        return run_detached(model, inputs)
    except Exception as exc:  # eager cannot run this point: _narrow_to_verified drops it
        return exc


def _narrow_to_verified(sets: list, refs: list, model, gm, inputs: tuple, signature: Signature):
    """(a narrower signature, why) when some probe cannot be verified, or None when every one can.

    A probe that fails moves several sizes at once; each is tried alone (the others as in the
    example) to find the ones to blame. A blamed size below the example's moves the range's start
    up to the example's (or to 2 when only size 1 fails in the captured graph); one above it moves
    the end down to the example's.
    """
    example_sizes = signature.sizes_of(inputs)
    for x, ref in zip(sets, refs):
        why = _unverifiable(x, ref, gm, signature, example_sizes)
        if why is None:
            continue
        sizes = signature.sizes_of(x)
        moved = {s: v for s, v in sizes.items() if v != example_sizes[s]}
        blamed = {}
        for symbol, size in moved.items():
            alone = inputs_at(signature, inputs, example_sizes | {symbol: size}, seed=4321)
            if _unverifiable(alone, _eager_or_error(model, alone), gm, signature, example_sizes):
                blamed[symbol] = size
        narrowed = signature
        for symbol, size in (blamed or moved).items():
            lo, hi = narrowed.ranges[symbol]
            if size < example_sizes[symbol]:
                lo = 2 if size == 1 and "captured graph" in why else example_sizes[symbol]
            else:
                hi = example_sizes[symbol]
            narrowed = narrowed.with_range(symbol, lo, hi)
        return narrowed, f"at {', '.join(f'{k}={v}' for k, v in sizes.items())} {why}"
    return None


def _unverifiable(x: tuple, ref, gm, signature: Signature, example_sizes: dict) -> str | None:
    """Why inputs ``x`` cannot serve as a verification point (eager raises there, or the captured
    graph is wrong only where a size is 1), or None."""
    if isinstance(ref, Exception):
        return f"eager raised {first_line(ref)}"
    if not any(size == 1 != example_sizes[s] for s, size in signature.sizes_of(x).items()):
        return None  # other disagreements are the captured graph's own: optimise_captured reports them
    try:
        if compare_outputs(run_detached(gm, x), ref).ok:
            return None
        return "the captured graph disagrees with eager there"
    except Exception as exc:
        return f"the captured graph raised {first_line(exc)}"


def _verified_points(reference: "Verifier", signature: Signature) -> list[dict]:
    points = []
    for x in reference.inputs:
        point = signature.sizes_of(x)
        if point and point not in points:
            points.append(point)
    return points


@dataclass
class Optimised:
    """What :func:`optimise_captured` made of a captured graph."""

    gm: torch.fx.GraphModule | None  # the optimised graph; None when a check failed
    records: list | None  # pass records; None when the capture itself disagreed with eager
    final: dict | None  # the final check against eager
    failure: str | None  # why the graph cannot be used, or None
    fp32_gm: torch.fx.GraphModule | None = None  # the graph before precision lowering (gm itself at fp32)
    own_answers: "Verifier | None" = None  # gm's outputs on the per-pass sets: the lowering stage's reference


PER_PASS_SETS = 4  # the example, one random variant, and accelc.shapes' two cheap probes


def optimise_captured(gm, reference: "Verifier", pass_list, ctx: PassContext, verify: bool,
                      progress=lambda message: None, report: dict | None = None) -> Optimised:
    """Check a captured graph against eager, run the passes, and check the result against eager.

    The passes are checked on the per-pass sets of ``reference`` (the example, a variant, two
    cheap probes), against eager's answers there; that check is the final one. The captured
    graph itself is checked there too: by the final check when no pass fired, and when the
    final check fails, to say which of the two is wrong (the stage's bisection takes the
    captured graph as right; checking it first cost every build a run of the per-pass sets,
    1.5 s on GPT-2). The other sets of ``reference`` (the large probes of each dynamic range)
    are run on the runtime that will serve the graph, before it may
    (:func:`accelc.backends.select_runtime`).
    """
    phases = report if report is not None else {}
    tolerance_of = tolerance_for_precision(ctx.precision)
    per_pass_sets = per_pass_indices(reference)
    captured = gm
    with build_phase(phases, "graph stage"):
        per_pass = reference.take(per_pass_sets)
        stage_check = per_pass.with_tolerance(tolerance_of, fixed=True)
        # The graph as it is before precision lowering is kept: OpenVINO lowers precision itself,
        # from the fp32 graph. The passes after lower_precision clean up its casts.
        names = [p.name for p in pass_list]
        split = names.index(PRECISION_PASS) if ctx.precision != "fp32" and PRECISION_PASS in names else len(names)
        manager = PassManager(pass_list[:split], verify=verify, on_progress=progress)
        gm, records = manager.run(gm, ctx, stage_check)
        outputs, fp32_gm = _answers_after(manager, None), gm
        if split < len(names):
            manager = PassManager(pass_list[split:], verify=verify, on_progress=progress)
            gm, tail = manager.run(gm, ctx, stage_check)
            records += tail
            outputs = _answers_after(manager, outputs)
    # The final check here covers the per-pass sets (the stage's own answers, when it has them);
    # the other sets, where the large probes are, are run once, on the runtime that will serve
    # (accelc.backends.check_the_rest), not on this graph as well.
    # The captured graph, when no pass changed it, at the strict tolerance it would have met alone.
    final_check = per_pass if gm is captured else reference.with_tolerance(tolerance_of).take(per_pass_sets)
    with build_phase(phases, "final check"):
        if outputs is None:
            progress("checking the optimised graph against eager")
            comparison, outputs = final_check.check(gm)
        else:
            comparison = final_check.compare(outputs)
    final = comparison.as_dict()
    final["inputs_checked"] = len(final_check.inputs)
    final["tolerance"] = "dtype-aware: fp32 rtol 1e-3 atol 1e-4·max(1,|ref|); see accelc.verify"
    if not final["ok"]:
        capture_check = comparison if gm is captured else per_pass.check(captured)[0]
        if not capture_check.ok:
            return Optimised(None, None, None, f"the captured graph disagrees with eager ({capture_check.message})")
        return Optimised(gm, records, final, f"optimised graph disagrees with eager ({final['message']})")
    # The lowering stage is checked against this graph's own answers on the per-pass sets, at
    # the default (dtype-aware) tolerance.
    own = final_check.take(list(range(len(outputs))), outputs).with_tolerance(dtype_tolerance)
    return Optimised(gm, records, final, None, fp32_gm, own)


def _answers_after(manager: PassManager, before: list | None) -> list | None:
    """The answers of the graph ``manager`` returned, on its verifier's sets: its check's, or
    ``before`` when no pass fired; None when passes fired unchecked (``verify=False``)."""
    if manager.outputs is not None:
        return manager.outputs
    return before if not any(r.status == FIRED for r in manager.records) else None


def partitioned_runtime(model, gm, inputs, stages, devices, microbatches: int, profile: bool, checker: "Verifier",
                        report: dict, progress):
    """Cut the graph into stages (model parallel; pipelined over micro-batches when ``microbatches`` > 1).

    The executor must match eager like any runtime (on the verification sets and on the whole
    example batch); when it does not, the model runs eagerly and the report says why. Bad
    settings (more stages than nodes, a device list that does not match) are the user's error.
    """
    from .partition.partitioner import make_plan
    from .runtime.pipeline import build_executor

    progress(f"partitioning into {stages or len(devices)} stages")
    plan = make_plan(gm, microbatch_inputs(inputs, microbatches), stages=stages, devices=devices, profile=profile)
    report["backend"] = "torch"
    report["plan"] = json.loads(plan.to_json())
    report["partition"] = {"stages": plan.num_stages, "devices": plan.devices, "microbatches": microbatches,
                           "profiled": plan.profiled, "balance": round(plan.balance(), 3)}
    whole_batch = Verifier([inputs], [run_detached(model, inputs)])
    whole_batch.tolerance_of = checker.tolerance_of
    return _verified_executor(model, [checker, whole_batch], report, "partitioned",
                              lambda: build_executor(gm, plan, microbatches=microbatches))


def branch_parallel_runtime(model, gm, workers: int, checker: "Verifier", report: dict, progress):
    """Run independent heavy branches of the graph concurrently on ``workers`` threads.

    Verified like any runtime; when it fails or disagrees, the model runs eagerly and the report
    says why. ``report["branches"]`` records the grouping so a saved artifact rebuilds the same.
    """
    from .runtime.branches import build_branch_executor

    progress(f"grouping independent branches for {workers} worker threads")
    report["backend"] = "torch"

    def build():
        executor = build_branch_executor(gm, workers=workers)
        report["branches"] = {"workers": workers, "threads_per_worker": executor.threads_per_worker,
                              "groups": len(executor.groups), "heavy_groups": executor.heavy_groups}
        return executor

    return _verified_executor(model, [checker], report, "branch-parallel", build)


def _verified_executor(model, checkers: list["Verifier"], report: dict, kind: str, build):
    """``build()``'s executor if it runs and matches eager on every checker's inputs; else the
    eager model, with the reason in ``report["backend_fallback"]``. A run's timeline, when the
    executor keeps one, goes in the report."""
    try:
        executor = build()
        for checker in checkers:
            comparison, _ = checker.check(executor)
            if not comparison.ok:
                break
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


def run_eagerly(model: torch.nn.Module, inputs: tuple, source_file: str | None = None):
    """Run the model on its own inputs; a model that raises is the user's error, shown at their line."""
    try:
        with torch.inference_mode():
            return model(*inputs)
    except Exception as exc:
        where = exception_location(exc, prefer=source_file)
        at = f" at {where}" if where else ""
        raise ModelRunError(f"the model raised {first_line(exc)}{at} when run on its own example inputs; fix the model or its inputs") from exc


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


__all__ = ["accelerate", "explain", "load", "AcceleratedModule", "run_eagerly", "measure_latency"]
