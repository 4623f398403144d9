"""Which runtime runs the optimised graph: PyTorch, ONNX Runtime, OpenVINO, or the fastest of them.

    optimised graph ─► lowering stage ─► PyTorch runtime ─────────────────┐
                  └─► ONNX export ─┬─► onnx stage ─► ONNX Runtime ─────────┼─► checked against eager ─► (auto) timed
                                   └─► convert_model ─► OpenVINO (CPU) ────┘

Every runtime is checked against eager on every verification input set before it may be used;
one that cannot be built, or disagrees, is not used and the report says why. The export is made
once when two runtimes start from it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from torch.utils import _pytree as pytree

from . import decisions
from .errors import UserInputError
from .pass_base import PassContext
from .pipeline import lower
from .cpu import cpu_has_native_bf16
from .runtime.torch import TorchRuntime
from .shapes import Signature
from .source import first_line
from .stages import GRAPH, LOWERING, ONNX, PRECISION_PASS
from .timing import build_phase
from .verify import Comparison, Verifier, per_pass_indices, worst_of

log = logging.getLogger(__name__)


def check_openvino_request(device, precision: str, split: bool) -> None:
    """``backend="openvino"`` is the user's error, before any work, where it cannot run."""
    if device.type != "cpu" or precision not in ("fp32", "bf16", "auto") or split:
        raise UserInputError("--backend openvino runs one graph on the CPU at fp32 or bf16: use it with --device cpu, "
                             "--precision fp32 or bf16, and without --stages/--devices/--branches")
    from .onnx.to_openvino import openvino_available

    why = openvino_available()
    if why:
        raise UserInputError(f"--backend openvino: {why}")


def select_runtime(gm, inputs, backend: str, device, ctx: PassContext, stage_pass: dict, signature: Signature,
                   checker: "Verifier", report: dict, progress, fp32_gm=None, exports: dict | None = None,
                   lowering_reference: "Verifier | None" = None):
    """The runtime for the optimised graph: PyTorch, ONNX Runtime, OpenVINO, or (``auto``) whichever
    measures fastest.

    The PyTorch runtime runs the lowering stage's output (built when needed: under ``auto`` unless
    another runtime is remembered, for a named backend only when that one fails); ONNX Runtime the export after the onnx
    stage; OpenVINO the export of the graph stage's fp32 output (``fp32_gm``: at bf16 OpenVINO
    lowers precision itself). Each must match eager on every verification input set to be used
    at all. When the backend asked for cannot be built or disagrees, the PyTorch runtime is used
    and ``report["backend_fallback"]`` says why; a candidate of ``auto`` that cannot is left out
    and ``report["auto_left_out"]`` says why. None when the PyTorch runtime disagrees too, at the
    large sets only the runtime to be kept is run on (``report["fallback"]`` says where). ``exports`` (a dict), when given, keeps the shared
    ONNX export under "onnx" for a caller that builds more runtimes from it. ``lowering_reference``:
    ``gm``'s own answers on the per-pass sets, which the lowering stage is checked against (else
    it computes them).

    Under ``auto`` each candidate is first checked on the quick sets (:func:`quick_check`; those
    the stage that built it checks its passes on), OpenVINO, which has no passes, on the example
    alone; the timing ranks those that pass, and only the one kept is then checked on the other
    sets, where the large inputs are (the next in rank when it fails there): the candidates that
    lose the timing are not run on inputs up to eight times the example's for nothing.
    """
    report["backend"] = "torch"
    built, sections = {}, {}

    def build_torch() -> None:
        """The lowering stage and the PyTorch runtime on its output, once, when first needed: a
        rebuild that remembers another runtime never builds it (3 s of GPT-2's)."""
        if "torch" in built:
            return
        with build_phase(report, "lowering stage"):
            lowered, records = lower(gm, device, inputs, stage_pass[LOWERING], signature, progress, ctx.refusals,
                                     reference=lowering_reference)
            report["runtime_lowering"] = [r.as_dict() for r in records]
            # The PyTorch runtime's check on the quick sets is the graph's own (the final check) and
            # its lowering's; the other sets are checked on it, as on every runtime, only if it is kept.
            built["torch"], sections["torch"] = TorchRuntime(lowered, device, inputs), report

    precision = report["precision"]
    fp32_gm = gm if fp32_gm is None else fp32_gm
    candidates = [] if backend == "torch" else [backend] if backend != "auto" else auto_candidates(device, precision, report)
    held = exports if exports is not None else {}
    share = fp32_gm is gm and ({"onnxruntime", "openvino"} <= set(candidates) or exports is not None)

    def build(names: list[str], torch_too: bool = True) -> None:
        # The lowering stage before OpenVINO's thread starts: beside OpenVINO's compilation (C++ on
        # both cores) its checks took 5.7 s of GPT-2's build instead of 2.1. ONNX Runtime's build
        # (Python passes on one core) is what that thread overlaps well.
        if torch_too:
            build_torch()
        _build_candidates(names, gm, fp32_gm, inputs, backend, device, ctx, stage_pass, signature, checker, report,
                          progress, held, share, built, sections)

    key = remembered_key(gm, inputs, device, precision, candidates, stage_pass, signature) if backend == "auto" else None
    if key is not None:
        chosen, tried = _remembered_choice(key, candidates, build, built, sections, checker, report, progress)
        if chosen is not None:
            return _kept(chosen, built, report)
        if report.get("fallback"):  # the PyTorch runtime, remembered, is wrong at a larger set: so is the graph
            release_dynamic_sessions(built.values())
            return None
        candidates = [name for name in candidates if name != tried]
    # A backend the user named needs the PyTorch runtime only if it fails: built then, not before.
    build(candidates, torch_too=backend in ("auto", "torch"))
    if exports is None:
        held.clear()  # the runtimes hold what they need of the export
    if backend != "auto":
        chosen = None
        if backend in built:
            chosen = _first_right_on_every_set([backend], built, sections, checker, backend, report, progress)
        if chosen is None and not report.get("fallback"):
            build_torch()
            chosen = _first_right_on_every_set(["torch"], built, sections, checker, backend, report, progress)
        if chosen is None:
            release_dynamic_sessions(built.values())
            return None
        return _kept(chosen, built, report)
    if precision == "int8" or len(built) == 1:  # PyTorch has no int8 form to compare with
        ranked = ["onnxruntime", "torch"] if "onnxruntime" in built else ["torch"]
    else:
        timings = _time_candidates(built, inputs, device, report, progress)
        ranked = sorted(timings, key=lambda name: timings[name].median_ms)
        report["backend_choice"] = {name: round(t.median_ms, 3) for name, t in timings.items()} | {"chosen": ranked[0]}
    chosen = _first_right_on_every_set(ranked, built, sections, checker, backend, report, progress)
    if chosen is None:
        release_dynamic_sessions(built.values())
        return None
    if "backend_choice" in report:
        report["backend_choice"]["chosen"] = chosen
        if key is not None:
            decisions.remember(key, chosen, {k: v for k, v in report["backend_choice"].items() if k != "chosen"})
    return _kept(chosen, built, report)


def _kept(chosen: str, built: dict, report: dict):
    """``built[chosen]``, named in ``report["backend"]``; the others' second sessions released."""
    release_dynamic_sessions(built.values())
    if chosen == "onnxruntime":
        # A partial export runs ONNX Runtime pieces inside a torch graph; it is saved as model.pt2 alone.
        report["backend"] = "onnxruntime (partial)" if report["onnx"].get("partial") else "onnxruntime"
    else:
        report["backend"] = chosen
    return built[chosen]


def remembered_key(gm, inputs, device, precision: str, candidates: list[str], stage_pass: dict,
                   signature: Signature) -> str | None:
    """The key ``auto``'s choice for this build is remembered under (:mod:`accelc.decisions`);
    None where it remembers none: at int8 (it times nothing) or with no runtime beside PyTorch's."""
    if precision == "int8" or not candidates:
        return None
    return decisions.choice_key(gm, inputs, device, precision, candidates, stage_pass, signature.dynamic_shapes())


def _remembered_choice(key: str, candidates: list[str], build, built: dict, sections: dict, checker: "Verifier",
                       report: dict, progress) -> tuple[str | None, str | None]:
    """(the runtime ``auto`` chose at an earlier build with ``key``, built alone and checked on
    every input set, or None; the runtime tried, or None when nothing is remembered). A tried
    runtime that fails to build or to match eager is forgotten, and the caller builds and times
    the rest; when that runtime is PyTorch's, ``report["fallback"]`` says the graph is wrong and
    eager serves."""
    entry = decisions.recall(key, candidates)
    if entry is None:
        return None, None
    name = entry["chosen"]
    progress(f"building {RUNTIME_WORDS[name]} alone: auto timed it fastest at an earlier build of this graph here")
    # That runtime alone: not the others, nor (for another) the PyTorch runtime's lowering stage.
    if name == "torch":
        build([])
    else:
        build([name], torch_too=False)
    if name in built and _first_right_on_every_set([name], built, sections, checker, "auto", report, progress) == name:
        report["backend_choice"] = dict(entry.get("timings_ms") or {}) | {"chosen": name}
        report["auto_remembered"] = REMEMBERED
        return name, name
    decisions.forget(key)
    built.pop(name, None)
    return None, name


REMEMBERED = ("auto built only the runtime it timed fastest at an earlier build of this graph on this machine "
              "(ACCELC_CACHE_DIR=off times every runtime again)")


def _build_candidates(names: list[str], gm, fp32_gm, inputs, backend: str, device, ctx: PassContext, stage_pass: dict,
                      signature: Signature, checker: "Verifier", report: dict, progress, held: dict, share: bool,
                      built: dict, sections: dict) -> None:
    """Build each runtime of ``names`` into ``built`` (and its report section into ``sections``);
    one that cannot be built or disagrees on the quick sets is left out and the report says why.
    The ONNX export both start from is made once (``share``) and kept in ``held["onnx"]``."""
    if not names:
        return
    shared = held.get("onnx")
    if shared is None and share:
        progress("exporting to ONNX")
        with build_phase(report, "onnx export"):
            shared = held["onnx"] = _shared_export(gm, inputs, signature)
    # OpenVINO's own work runs on a thread while ONNX Runtime's build runs here (mostly Python: the
    # onnx stage's passes): the two overlap on the CPU's cores instead of queueing.
    pending_openvino = None
    if "openvino" in names:
        pending_openvino = _start_openvino(fp32_gm, inputs, report["precision"], signature, checker, report, progress,
                                           shared if fp32_gm is gm else None, background="onnxruntime" in names)
    if "onnxruntime" in names:
        ort_runtime = _onnxruntime(gm, inputs, device, ctx, stage_pass, signature, checker, report, progress, shared)
        if ort_runtime is not None:
            built["onnxruntime"], sections["onnxruntime"] = ort_runtime, report["onnx"]
    if pending_openvino is not None:
        # Under auto, OpenVINO (which has no passes of its own to check) is checked on the example
        # alone before the timing; on the other sets only if it ranks first (check_the_rest).
        ov_runtime, why = _openvino(pending_openvino, checker, report, progress, example_only=backend == "auto")
        if ov_runtime is None and backend == "openvino":
            report["backend_fallback"] = f"{why}; using the PyTorch runtime"
        elif ov_runtime is None:
            report.setdefault("auto_left_out", {})["openvino"] = why
        else:
            built["openvino"], sections["openvino"] = ov_runtime, report["openvino"]


def _time_candidates(built: dict, inputs, device, report: dict, progress) -> dict:
    """Each runtime's median latency on a seeded variant of the example, timed interleaved. No
    warm-up call: each has just run the example's sizes in its check (GPT-2: 0.6 s of calls)."""
    from .timing import compare_latency
    from .verify import verification_inputs

    progress("timing " + " vs ".join(RUNTIME_WORDS[name] for name in built))
    with build_phase(report, "auto timing"):
        return compare_latency(built, verification_inputs(inputs, count=1, seed=5), seconds=0.5 * len(built),
                               device=device, warmup=0, min_iterations=3, stop_when_clear=True)


def _first_right_on_every_set(ranked: list[str], built: dict, sections: dict, checker: "Verifier", backend: str,
                              report: dict, progress) -> str | None:
    """The first runtime of ``ranked`` that also matches eager on the sets the quick check left
    out (the large probes: run once, on the runtime to be kept, not on every candidate and the
    graph too). A backend the user named that fails there gives way to the PyTorch runtime, with
    ``report["backend_fallback"]`` saying why; when the PyTorch runtime fails there too, None,
    and ``report["fallback"]`` says why."""
    for name in ranked:
        # The PyTorch runtime's quick check is the graph's (report["verification"]); the others' their own.
        why = check_the_rest(built[name], checker, sections[name], report, progress, RUNTIME_WORDS[name])
        if why is None:
            return name
        if name == "torch":
            report["fallback"] = f"the optimised graph disagrees with eager ({why}); running eagerly"
            return None
        if backend != "auto":
            report["backend_fallback"] = f"{RUNTIME_WORDS[name]} disagrees with eager ({why}); using the PyTorch runtime"
        else:
            report.setdefault("auto_left_out", {})[name] = f"{RUNTIME_WORDS[name]} disagrees with eager ({why})"
    return None


def release_dynamic_sessions(runtimes) -> None:
    """Close the second ONNX Runtime session that the checks at other sizes opened (the pinned one
    serves the example's): its memory is not held for calls that may never come; a call at
    another size reopens it."""
    for runtime in runtimes:
        if hasattr(runtime, "release_dynamic_session"):
            runtime.release_dynamic_session()


def quick_check(checker: "Verifier") -> "Verifier":
    """The input sets a candidate runtime is checked on before it may be timed: the example, one
    random variant and the cheap probes of other sizes (:func:`accelc.verify.per_pass_indices`)."""
    return checker.take(per_pass_indices(checker))


def check_the_rest(runtime, checker: "Verifier", section: dict, report: dict, progress, what: str) -> str | None:
    """Check ``runtime``, which passed its first check (:func:`quick_check`'s sets, or those its
    ``section["verification"]["sets_checked"]`` names), on the rest of ``checker``'s sets; that
    verification then covers every set. Returns why it fails there, or None."""
    done = dict(section["verification"])
    checked = set(done.pop("sets_checked", None) or per_pass_indices(checker))
    rest = checker.take([i for i in range(len(checker.inputs)) if i not in checked])
    if rest.inputs:
        progress(f"checking {what} against eager on every input set")
        with build_phase(report, "runtime checks"):
            try:
                comparison, _ = rest.check(runtime)
            except Exception as exc:  # a runtime that raises at a larger size is not used
                log.debug("%s raised on a verification set", what, exc_info=True)
                comparison = Comparison(False, math.inf, math.inf, f"it raised {first_line(exc)}")
        if not comparison.ok:
            section["verification"] = done | comparison.as_dict() | {"inputs_checked": len(checker.inputs)}
            return comparison.message
        merged = worst_of(Comparison(True, done["max_abs_error"], done["max_rel_error"],
                                     relative_error=done["relative_error"]), comparison)
        section["verification"] = done | merged.as_dict() | {"inputs_checked": len(checker.inputs)}
    return None


RUNTIME_WORDS = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def _onnxruntime(gm, inputs, device, ctx: PassContext, stage_pass: dict, signature: Signature, checker: "Verifier",
                 report: dict, progress, exported):
    """ONNX Runtime on the export after the onnx stage, checked against eager on the quick sets
    (:func:`check_the_rest` does the others); None (and ``report["backend_fallback"]`` says why)
    when it cannot be built or disagrees."""
    progress("exporting to ONNX and building an ONNX Runtime session")
    onnx_ctx = PassContext(device=device, precision=report["precision"], example_inputs=inputs, refusals=ctx.refusals,
                           error_budget=ctx.error_budget, calibration_inputs=ctx.calibration_inputs)
    try:
        from .onnx.build import build_onnx_runtime

        quick = quick_check(checker)
        with build_phase(report, "onnxruntime build"):
            ort_runtime, section = build_onnx_runtime(gm, inputs, device, onnx_ctx, stage_pass[ONNX],
                                                      dynamic_shapes=signature.dynamic_shapes(), cases=_cases(quick),
                                                      on_progress=progress, exported=exported)
        report["onnx"] = section
        with build_phase(report, "runtime checks"):
            # The runtime ran the onnx stage's check on these very sets (build_onnx_runtime's
            # cases): its answers there are compared, not computed again.
            answers = ort_runtime.take_checked_answers() if hasattr(ort_runtime, "take_checked_answers") else None
            comparison = quick.compare(answers) if answers is not None else quick.check(ort_runtime)[0]
    except Exception as exc:  # export or session failure: keep the PyTorch runtime, say why
        log.debug("ONNX Runtime backend failed", exc_info=True)
        report["backend_fallback"] = f"ONNX Runtime unavailable ({first_line(exc)}); using the PyTorch runtime"
        return None
    if not comparison.ok:
        report["backend_fallback"] = f"ONNX Runtime disagrees with eager ({comparison.message}); using the PyTorch runtime"
        return None
    report["onnx"]["verification"] = comparison.as_dict() | {"inputs_checked": len(quick.inputs)}
    return ort_runtime


def _start_openvino(fp32_gm, inputs, precision: str, signature: Signature, checker: "Verifier", report: dict, progress,
                    exported, background: bool):
    """OpenVINO's build of the fp32 graph's export at ``precision``, started (its conversion and
    compilation on a thread when ``background``); the exception instead when it cannot start.
    The "openvino build" phase counts only the time the caller waits for it."""
    progress("converting to OpenVINO and compiling for its CPU plugin")
    try:
        from .onnx.to_openvino import start_openvino_build

        with build_phase(report, "openvino build"):
            return start_openvino_build(fp32_gm, inputs, precision, dynamic_shapes=signature.dynamic_shapes(),
                                        exported=exported, reference=pytree.tree_leaves(checker.reference_outputs[0]),
                                        background=background)
    except Exception as exc:
        return exc


def _openvino(pending, checker: "Verifier", report: dict, progress, example_only: bool = False):
    """The OpenVINO build ``pending`` (from :func:`_start_openvino`), checked against eager on the
    quick sets, or with ``example_only`` on the example alone (:func:`check_the_rest` does the
    others); returns (runtime, None), or (None, why) when it could not be built or disagrees."""
    checked = [0] if example_only else per_pass_indices(checker)
    quick = checker.take(checked)
    try:
        if isinstance(pending, Exception):
            raise pending
        with build_phase(report, "openvino build"):
            runtime, section = pending.result()
        report["openvino"] = section
        progress("checking OpenVINO against eager")
        with build_phase(report, "runtime checks"):
            comparison, _ = quick.check(runtime)
    except Exception as exc:
        log.debug("OpenVINO backend failed", exc_info=True)
        report.setdefault("openvino", {})["failure"] = first_line(exc)
        return None, f"OpenVINO unavailable ({first_line(exc)})"
    report["openvino"]["verification"] = comparison.as_dict() | {"inputs_checked": len(quick.inputs),
                                                                  "sets_checked": checked}
    if not comparison.ok:
        return None, f"OpenVINO disagrees with eager ({comparison.message})"
    return runtime, None


def auto_candidates(device, precision: str, report: dict) -> list[str]:
    """The runtimes ``auto`` builds beside PyTorch's: ONNX Runtime (not at bf16 on the CPU, where
    its CPU provider has no bf16 kernels), and OpenVINO where :func:`_openvino_candidate` says."""
    names = []
    if precision == "bf16" and device.type == "cpu":
        report.setdefault("auto_left_out", {})["onnxruntime"] = "its CPU provider has no bf16 kernels"
    else:
        names.append("onnxruntime")
    if _openvino_candidate(device, precision, report):
        names.append("openvino")
    return names


def _openvino_candidate(device, precision: str, report: dict) -> bool:
    """Whether ``auto`` also builds OpenVINO: on the CPU, at fp32 or bf16, when it is installed
    (an optional extra; without it ``report["auto_left_out"]`` says how to get it)."""
    if device.type != "cpu" or precision not in ("fp32", "bf16"):
        return False
    from .onnx.to_openvino import openvino_available

    why = openvino_available()
    if why:
        report.setdefault("auto_left_out", {})["openvino"] = why
    return why is None


def _shared_export(gm, inputs, signature: Signature):
    """The one ONNX export ONNX Runtime and OpenVINO both start from; None when it needs a partial
    export or fails (each builder then exports, or fails, on its own and says why)."""
    from .onnx.build import export_for_runtimes

    try:
        return export_for_runtimes(gm, inputs, signature.dynamic_shapes())
    except Exception:
        log.debug("shared ONNX export failed", exc_info=True)
        return None


def _cases(verifier: "Verifier") -> list[tuple[tuple, list]]:
    """(inputs, flat eager outputs) pairs, as the ONNX stage checks each pass on them: the example,
    a variant and the cheap probes (the runtime as a whole is then checked on every set)."""
    return [(x, pytree.tree_leaves(ref)) for x, ref in zip(verifier.inputs, verifier.reference_outputs)]


# ── precision="auto" ──

# The default bar for precision="auto": the worst output's max |out - eager fp32| / max |eager fp32|
# (Comparison.relative_error), over every verification input set. Measured on the samples
# (benchmarks/results/precision-cpu.json): bf16 with fp32 normalisations 2.7e-3 (multi-branch
# CNN) to 1.2e-2 (BERT-base), OpenVINO's own bf16 the same; int8 dynamic quantisation 3e-3 on the
# CNNs but 5.6e-2 on BERT. So the default takes bf16 everywhere and int8 where it is as exact.
DEFAULT_TOLERANCE = 2e-2


def check_precision_request(device, backend: str, split: bool, tolerance: float | None) -> float:
    """``precision="auto"``'s settings, checked before any work; returns the tolerance."""
    if device.type != "cpu" or split:
        raise UserInputError("--precision auto chooses among the CPU's precisions (fp32, bf16, int8) for one graph: "
                             "use it with --device cpu and without --stages/--devices/--branches, or name a precision")
    if tolerance is None:
        return DEFAULT_TOLERANCE
    if not 0 < tolerance < 1:
        raise UserInputError(f"--tolerance is a relative error between 0 and 1 (such as 0.01), got {tolerance}")
    return float(tolerance)


def choose_precision(gm, inputs, backend: str, device, ctx: PassContext, stage_pass: dict, signature: Signature,
                     reference: "Verifier", report: dict, progress, tolerance: float,
                     lowering_reference: "Verifier | None" = None):
    """``precision="auto"``: fp32 (the runtime :func:`select_runtime` keeps for ``backend``), then
    each lower precision this CPU and ``backend`` have (bf16 in OpenVINO and in PyTorch on CPUs
    with native bf16; int8 in ONNX Runtime), each checked against eager fp32 on the quick sets.
    Those within ``tolerance`` are timed interleaved, and the fastest that is also within it on
    every other set is kept; ``report["precision_candidates"]`` gives each one's latency, error
    and why it was kept or not. Returns (runtime, the graph to save as model.pt2). ``gm`` is the
    fp32 graph.
    """
    from .verify import tolerance_for_precision

    report["precision"] = "fp32"
    exports: dict = {}
    fp32_checker = reference.with_tolerance(tolerance_for_precision("fp32"))
    runner = select_runtime(gm, inputs, backend, device, ctx, stage_pass, signature, fp32_checker, report, progress,
                            exports=exports, lowering_reference=lowering_reference)
    if runner is None:  # the fp32 graph itself disagrees with eager at the larger sets
        return None, gm
    fp32_error = _runtime_error(report)
    candidates = [_Candidate("fp32", report["backend"], runner, gm, fp32_error, {}, checked_fully=True)]
    with build_phase(report, "precision candidates"):
        for precision, name, build in _lower_precision_builds(backend, device, report):
            progress(f"building {name} at {precision} for --precision auto")
            sub = {"precision": precision}  # its own build phases stay in it: this whole loop is one phase
            checker = reference.with_tolerance(tolerance_for_precision(precision))
            # int8 keeps its most sensitive layers in fp32 where that brings it within the tolerance
            candidate_ctx = PassContext(device=device, precision=precision, example_inputs=inputs,
                                        calibration_inputs=ctx.calibration_inputs,
                                        error_budget=tolerance if precision == "int8" else None)
            built, graph, why = build(gm, inputs, device, candidate_ctx, stage_pass, signature, checker, sub, progress,
                                      exports.get("onnx"))
            candidate = _Candidate(precision, name, built, graph, _runtime_error(sub | {"backend": name}), sub, why,
                                   checker=checker, refusals=candidate_ctx.refusals)
            candidate.drop_if_above(tolerance)
            candidates.append(candidate)
    exports.clear()
    usable = [c for c in candidates if c.runtime is not None]
    if len(usable) > 1:
        from .timing import compare_latency
        from .verify import verification_inputs

        progress("timing " + " vs ".join(c.label for c in usable))
        with build_phase(report, "auto timing"):
            timings = compare_latency({c.label: c.runtime for c in usable},  # each warm from its check
                                      verification_inputs(inputs, count=1, seed=5), seconds=0.5 * len(usable),
                                      device=device, warmup=0, min_iterations=3, stop_when_clear=True)
        for c in usable:
            c.median_ms = timings[c.label].median_ms
    # Fastest first; a lower precision that passed the quick sets is kept only once it passes
    # every set within the tolerance (fp32 already has: select_runtime checked it fully).
    chosen = candidates[0]
    for c in sorted(usable, key=lambda c: c.median_ms if c.median_ms is not None else 0.0):
        if not c.checked_fully:
            why = check_the_rest(c.runtime, c.checker, c.section, report, progress, c.label)
            c.error = _runtime_error(c.sub | {"backend": c.backend})
            c.checked_fully = True
            if why is not None:
                c.why, c.runtime = f"disagrees with eager ({why})", None
            c.drop_if_above(tolerance)
        if c.runtime is not None:
            chosen = c
            break
    release_dynamic_sessions(c.runtime for c in candidates if c.runtime is not None)
    report["precision_candidates"] = [c.as_dict(c is chosen) for c in candidates]
    report["precision"] = chosen.precision
    report["precision_tolerance"] = tolerance
    if chosen.precision != "fp32":
        ctx.refusals.extend(chosen.refusals)  # what its build left alone (int8: the layers kept fp32)
        report["backend"] = chosen.backend
        report.pop("backend_choice", None)  # that timing chose among the fp32 runtimes
        for key in ("onnx", "openvino", "runtime_lowering"):
            if key in chosen.sub:
                report[key] = chosen.sub[key]
    return chosen.runtime, chosen.graph


@dataclass
class _Candidate:
    """One (precision, backend) of precision="auto": its runtime (None when not usable), the graph
    model.pt2 would hold, its check against eager fp32, its report sections, why it is not usable."""

    precision: str
    backend: str
    runtime: object
    graph: object
    error: dict | None
    sub: dict
    why: str | None = None
    median_ms: float | None = None
    checker: object = None  # the Verifier at this precision's tolerance
    checked_fully: bool = False  # on every set, not only the quick ones
    refusals: list = field(default_factory=list)  # its build's, joined to the report's if it is kept

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def section(self) -> dict:
        """The report section whose "verification" is this candidate's check."""
        for key in ("onnx", "openvino"):
            if key in self.sub:
                return self.sub[key]
        return self.sub

    def drop_if_above(self, tolerance: float) -> None:
        if self.runtime is not None and self.error and self.error["relative_error"] > tolerance:
            self.why = f"relative error {self.error['relative_error']:.2g} is above the tolerance {tolerance:g}"
            self.runtime = None

    def as_dict(self, chosen: bool) -> dict:
        if chosen:
            reason = "the fastest within the tolerance" if self.median_ms is not None else "the only one within it"
        elif self.runtime is None:
            reason = self.why or "not built"
        else:
            reason = "slower"
        error = self.error or {}
        kept_fp32 = (_quantize_record(self.sub) or {}).get("stats", {}).get("kept_fp32_layers", [])
        return {"precision": self.precision, "backend": self.backend, "layers_kept_fp32": kept_fp32,
                "median_ms": None if self.median_ms is None else round(self.median_ms, 3),
                "max_abs_error": error.get("max_abs_error"), "max_rel_error": error.get("relative_error"),
                "inputs_checked": error.get("inputs_checked"), "chosen": chosen, "reason": reason}


def _runtime_error(report: dict) -> dict | None:
    """The check against eager of the runtime ``report["backend"]`` names."""
    backend = report.get("backend") or ""
    if backend.startswith("onnxruntime"):
        return (report.get("onnx") or {}).get("verification")
    if backend == "openvino":
        return (report.get("openvino") or {}).get("verification")
    return report.get("verification")


def _lower_precision_builds(backend: str, device, report: dict) -> list:
    """(precision, backend, build) for each lower precision ``backend`` has on this CPU."""
    builds = []
    native_bf16 = cpu_has_native_bf16()
    if not native_bf16:
        report["warnings"].append("this CPU has no native bf16 (avx512_bf16/amx_bf16): --precision auto tries fp32 "
                                  "and int8 only")
    if native_bf16 and backend in ("auto", "openvino") and _openvino_candidate(device, "bf16", {}):
        builds.append(("bf16", "openvino", _build_openvino_candidate))
    if native_bf16 and backend in ("auto", "torch"):
        builds.append(("bf16", "torch", _build_torch_bf16))
    if backend in ("auto", "onnxruntime"):
        builds.append(("int8", "onnxruntime", _build_ort_candidate))
    return builds


def _build_openvino_candidate(gm, inputs, device, ctx, stage_pass, signature, checker, sub, progress, exported):
    pending = _start_openvino(gm, inputs, ctx.precision, signature, checker, sub, progress, exported, background=False)
    runtime, why = _openvino(pending, checker, sub, progress)
    return runtime, gm, why


def _quantize_record(sub: dict) -> dict | None:
    """The quantize_int8 record of a candidate's onnx stage (its stats name the layers kept fp32)."""
    return next((p for p in (sub.get("onnx") or {}).get("onnx_passes", []) if p["name"] == "quantize_int8"), None)


def _build_ort_candidate(gm, inputs, device, ctx, stage_pass, signature, checker, sub, progress, exported):
    runtime = _onnxruntime(gm, inputs, device, ctx, stage_pass, signature, checker, sub, progress, exported)
    if runtime is not None and (_quantize_record(sub) or {}).get("status") != "fired":
        why = next((r.reason for r in ctx.refusals if r.pass_name == "quantize_int8"), "quantize_int8 did not fire")
        return None, gm, f"not quantised: {why}"  # the fp32 export under the name int8 is no candidate
    return runtime, gm, sub.get("backend_fallback")


def _build_torch_bf16(gm, inputs, device, ctx, stage_pass, signature, checker, sub, progress, exported):
    """The fp32 graph through the graph stage's precision passes (lower_precision and the cleanup
    after it) at bf16, then the lowering stage: the PyTorch runtime at bf16."""
    from .pass_manager import PassManager

    names = [p.name for p in stage_pass[GRAPH]]
    if PRECISION_PASS not in names:
        return None, None, f"{PRECISION_PASS} is not in the graph stage (--passes/--disable)"
    tail = stage_pass[GRAPH][names.index(PRECISION_PASS):]
    per_pass = checker.take(per_pass_indices(checker))
    low, records = PassManager(tail, on_progress=progress).run(gm, ctx, per_pass)
    if not any(r.name == PRECISION_PASS and r.status == "fired" for r in records):
        return None, None, f"{PRECISION_PASS} did not lower the graph ({records[0].reason or 'no change'})"
    lowered, lowering = lower(low, device, inputs, stage_pass[LOWERING], signature, progress, ctx.refusals)
    runtime = TorchRuntime(lowered, device, inputs)
    quick = quick_check(checker)
    comparison, _ = quick.check(runtime)
    sub["verification"] = comparison.as_dict() | {"inputs_checked": len(quick.inputs)}
    sub["runtime_lowering"] = [r.as_dict() for r in lowering]
    if not comparison.ok:
        return None, None, f"the bf16 graph disagrees with eager ({comparison.message})"
    return runtime, low, None


__all__ = ["select_runtime", "auto_candidates", "remembered_key", "RUNTIME_WORDS", "check_openvino_request", "check_precision_request",
           "choose_precision", "DEFAULT_TOLERANCE"]
