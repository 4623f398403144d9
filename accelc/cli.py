"""The ``accelc`` command: a thin layer over :mod:`accelc.api`.

    accelc optimize model.py -o OUT     capture, optimise, verify, time, save
    accelc run OUT                      load an artifact and time it
    accelc passes                       list registered passes
    accelc explain model.py             dry run: what would fire, what was refused and why
    accelc bench model.py               side by side against eager, torch.compile, ONNX Runtime

Errors are one line on stderr and a non-zero exit; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from .console import Progress, plain_rows, print_rows
from .errors import AccelcError, UserInputError
from .logs import CapturedLogs

LOG_FILE = "accelc.log"


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number above 0")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse with accelc's error form: one line, what is wrong and where to look, exit 2."""

    def error(self, message: str):
        self.exit(2, f"accelc: error: {message} (see `{self.prog} --help`)\n")


def _add_example_sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=_positive_int, default=None, metavar="B",
                   help="batch size of the example inputs built for a Hugging Face model folder (default: 1)")
    p.add_argument("--seq", type=_positive_int, default=None, metavar="S",
                   help="sequence length of a folder's token inputs (default: 128, at most max_position_embeddings)")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_example_sizes(p)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                   help="auto picks whichever of PyTorch, ONNX Runtime and OpenVINO (when installed, on the CPU) "
                        "measures fastest (default: auto)")
    p.add_argument("--static", action="store_true", help="pin every input size to the example's (no dynamic sizes)")
    p.add_argument("--dynamic", default=None, metavar="SPEC",
                   help="which sizes may vary, e.g. batch=1..64,seq=1..512,height=static (default: inferred: batch, "
                        "sequence of token inputs, image height/width where the model allows)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8", "auto"],
                   help="fp16/bf16 lower the graph; int8 quantises MatMul weights (and, with --calibration, "
                        "convolutions) in ONNX Runtime (CPU); auto tries "
                        "fp32, bf16 and int8 and keeps the fastest within --tolerance (CPU)")
    p.add_argument("--passes", help="comma-separated pass names replacing the default pipeline")
    p.add_argument("--disable", help="comma-separated pass names to leave out")


def _add_build_options(p: argparse.ArgumentParser) -> None:
    """What only a real build uses (explain's dry run builds nothing)."""
    p.add_argument("--no-verify", action="store_true",
                   help="skip the numeric check after each graph pass (the final check against eager always runs)")
    p.add_argument("--stages", type=int, default=None, help="cut the graph into N CPU stages (model parallel)")
    p.add_argument("--devices", default=None, help="one device per stage, e.g. cpu,cuda:0")
    p.add_argument("--microbatches", type=int, default=1, help="pipeline M micro-batches through the stages")
    p.add_argument("--profile", action="store_true", help="time every node on the target to balance the stages")
    p.add_argument("--branches", type=int, default=None, metavar="N",
                   help="run independent branches (multi-branch blocks, parallel heads) concurrently on N threads")
    p.add_argument("--tolerance", type=float, default=None, metavar="REL",
                   help="with --precision auto: the largest relative error (max |out - eager| / max |eager|) a "
                        "lower precision may have (default: 0.02)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="with --precision int8 or auto: a torch.save'd list of input sets like the real ones, "
                        "from which int8 convolutions take their activation ranges")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    # --verbose is accepted before and after the subcommand: a parent parser shared by all of them,
    # whose default is SUPPRESS there so a subcommand without the flag keeps the top-level value.
    verbose = _Parser(add_help=False)
    verbose.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks and library logs")
    parser = _Parser(prog="accelc", description="Model-acceleration compiler for PyTorch.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks and library logs")
    parser.add_argument("--version", action="version", version=f"accelc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    original_add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: original_add_parser(*a, parents=[verbose], **k)

    p = sub.add_parser("optimize", help="capture, optimise, verify and save a model (model.py or Hugging Face folder)")
    p.add_argument("model", help="a model.py defining get_model() and get_inputs(), or a Hugging Face model folder "
                                 "(save_pretrained)")
    p.add_argument("-o", "--output", required=True, help="artifact folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--no-bench", action="store_true", help="skip the eager vs accelc latency measurement")
    _add_common(p)
    _add_build_options(p)

    p = sub.add_parser("run", help="load an artifact folder, run it and print its latency")
    p.add_argument("artifact", help="folder written by `accelc optimize`")
    p.add_argument("--device", default=None, help="override the device recorded in the artifact")
    p.add_argument("--seconds", type=_positive_float, default=2.0, help="timing budget (default 2 s)")

    sub.add_parser("passes", help="list every registered pass, built-in and plugin")

    p = sub.add_parser("explain", help="dry run: capture, passes fired, candidates refused and why")
    p.add_argument("model", help="a model.py defining get_model() and get_inputs(), or a Hugging Face model folder "
                                 "(save_pretrained)")
    _add_common(p)

    p = sub.add_parser("bench", help="time accelc against eager, torch.compile, ONNX Runtime and OpenVINO")
    p.add_argument("model", help="a model.py defining get_model() and get_inputs(), or a Hugging Face model folder "
                                 "(save_pretrained)")
    _add_example_sizes(p)
    p.add_argument("--against", default=None, help="comma-separated systems (default: all available)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to this file")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N, for every system (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="the precision every system runs at; errors are against eager fp32 (default: fp32)")
    p.add_argument("--max-autotune", action="store_true", help="add torch.compile(mode='max-autotune')")
    p.add_argument("--seconds", type=_positive_float, default=None,
                   help="timing budget shared by all systems, in interleaved rounds (default: 5 s)")
    return parser


def _accelerate_from_file(args, progress: Progress, measure: bool):
    from .api import accelerate
    from .loader import load_model_file

    progress(f"loading {args.model}")
    loaded = load_model_file(args.model, batch=args.batch, seq=args.seq)
    return accelerate(
        loaded.module, loaded.inputs, backend=args.backend, device=args.device, precision=args.precision,
        passes=_split(args.passes), disable=_split(args.disable), verify=not args.no_verify,
        measure=measure, dynamic=args.dynamic, static=args.static, stages=args.stages, devices=_split(args.devices),
        microbatches=args.microbatches, profile=args.profile, branches=args.branches, tolerance=args.tolerance,
        calibration=_calibration_file(args.calibration), source_file=loaded.path, on_progress=progress,
    )


def _calibration_file(path: str | None):
    """The input sets saved in ``path`` (``torch.save([inputs, ...], path)``), or None."""
    if path is None:
        return None
    import torch

    from .source import first_line

    if not os.path.isfile(path):
        raise UserInputError(f"--calibration {path}: no such file; save the input sets with "
                             "torch.save([inputs, ...], path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(f"--calibration {path} is not a torch.save'd list of input sets "
                             f"({first_line(exc)})") from None


def cmd_optimize(args) -> int:
    from .artifact import check_output_folder

    check_output_folder(args.output, args.force)  # before any work: fail fast, lose nothing
    progress = Progress()
    fast = _accelerate_from_file(args, progress, measure=not args.no_bench)
    progress("saving the artifact")
    path = fast.save(args.output, force=args.force)
    args.log_file = os.path.join(path, LOG_FILE)
    args.logs.write(args.log_file)  # what the libraries said, kept with the artifact
    progress.done()
    print_rows(summary_rows(fast.report))
    print(f"artifact: {os.path.relpath(path)}  (report: {os.path.relpath(os.path.join(path, 'report.html'))})")
    return 0


def cmd_run(args) -> int:
    from .module import AcceleratedModule
    from .timing import compare_latency
    from .verify import verification_inputs

    fast = AcceleratedModule.load(args.artifact, device=args.device)
    inputs = fast.example_inputs
    out = fast(*inputs)
    shapes = [tuple(t.shape) for t in _leaves(out)]
    timing = compare_latency({"accelc": fast}, verification_inputs(inputs, count=2, seed=7), seconds=args.seconds,
                             device=fast.report.get("device"))["accelc"]
    print(f"ran {args.artifact} on {fast.report.get('device')}: outputs {shapes}")
    print(f"latency: median {timing.median_ms:.3f} ms, p90 {timing.p90_ms:.3f} ms, min {timing.min_ms:.3f} ms, "
          f"max {timing.max_ms:.3f} ms over {timing.iterations} runs")
    recorded = (fast.report.get("latency") or {}).get("accelc")
    if recorded:
        print(f"(at optimize time: accelc median {recorded['median_ms']:.3f} ms, eager median "
              f"{fast.report['latency']['eager']['median_ms']:.3f} ms)")
    return 0


def cmd_passes(args) -> int:
    from .registry import Registry
    from .stages import STAGES, build_pipeline, stages_of

    registry = Registry.discover()
    plans = {device: build_pipeline(registry, device) for device in ("cpu", "cuda")}
    for stage in STAGES.values():
        names = registry.names(stage.ir)
        if stage.ir == "fx":  # one fx pass belongs to one fx stage (accelc.stages.stages_of)
            names = [n for n in names if stage.name in stages_of(registry, n)]
        position = {d: {n: i + 1 for i, n in enumerate(plans[d].names(stage.name))} for d in plans}
        names.sort(key=lambda n: (position["cpu"].get(n, 99), position["cuda"].get(n, 99), n))
        width = max((len(n) for n in names), default=4)
        print(f"{stage.name} stage: {stage.why}")
        print(f"  {'pass':<{width}}  cpu  cuda   description  [source]")
        for name in names:
            cpu, cuda = (str(position[d].get(name, "-")) for d in ("cpu", "cuda"))
            try:
                description = registry.load(stage.ir, name).description()
            except AccelcError as exc:  # a broken plugin is listed, not fatal
                description = f"(cannot be loaded: {exc})"
            print(f"  {name:<{width}}  {cpu:>3}  {cuda:>4}   {description}  [{registry.entry(stage.ir, name).source}]")
        print()
    print("cpu/cuda: position in that device's default pipeline (-: runs only when --passes names it); a name that "
          "two stages have is written stage:name in --passes")
    return 0


def cmd_explain(args) -> int:
    from .api import explain
    from .loader import load_model_file

    progress = Progress()
    progress(f"loading {args.model}")
    loaded = load_model_file(args.model, batch=args.batch, seq=args.seq)
    report = explain(loaded.module, loaded.inputs, backend=args.backend, device=args.device,
                     precision=args.precision, passes=_split(args.passes), disable=_split(args.disable),
                     dynamic=args.dynamic, static=args.static, source_file=loaded.path, on_progress=progress)
    progress.done()
    print("\n".join(explain_lines(report)))
    return 0


def explain_lines(report: dict) -> list[str]:
    """What ``accelc explain`` prints: capture, shapes, each stage's passes with what they left
    alone and why (at the user's source line where there is one), and what was not run."""
    cap = report["capture"]
    lines = [f"capture: {cap['method']}" + (f" failed at {cap['location']}: {cap['failure']}" if cap.get("failure") else "")]
    lines += [f"  tried {attempt}" for attempt in cap.get("attempts", [])]
    lines.append(f"shapes: {describe_shapes(report.get('dynamic'))}")
    lines += [f"  narrowed: {why}" for why in (report.get("dynamic") or {}).get("narrowed", [])]
    refusals: dict[tuple, list] = {}
    for r in report.get("refusals", []):
        refusals.setdefault((r.get("stage", "graph"), r["pass_name"]), []).append(r)
    for stage, records in (("graph", report.get("passes", [])), ("lowering", report.get("runtime_lowering", []))):
        if records:
            lines.append(f"{stage} stage:")
        for rec in records:
            counts = ", ".join(f"{k} {v}" for k, v in rec["stats"].items())
            lines.append(f"  {rec['name']}: {rec['status']}" + (f" ({counts})" if counts else "")
                         + (f": {rec['reason']}" if rec.get("reason") else ""))
            for r in refusals.get((stage, rec["name"]), []):
                where = f" [{r['location']}]" if r.get("location") else ""
                lines.append(f"      left {r['node']} alone: {r['reason']}{where}")
    dry = report.get("dry_run") or {}
    if dry.get("lowering"):
        lines.append(f"  ({dry['lowering']})")
    if dry.get("onnx_stage"):
        lines.append(f"onnx stage (not run): {', '.join(dry['onnx_stage'])}")
        lines.append(f"  {dry['onnx_why']}")
    if dry.get("openvino"):
        lines.append(f"backend: {dry['openvino']}")
    if dry.get("auto"):
        lines.append(f"backend: {dry['auto']}")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    if report.get("fallback"):
        lines.append(f"fallback: {report['fallback']}")
    return lines


def cmd_bench(args) -> int:
    try:
        from .bench import bench_main
    except ImportError as exc:
        raise AccelcError(f"accelc bench is not available in this build ({exc})") from exc
    return bench_main(args)


def summary_table(report: dict) -> str:
    """The end-of-run summary as plain text (what a pipe or a log file gets)."""
    return plain_rows(summary_rows(report))


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The short end-of-run table: passes fired, nodes, max error, latency, build time (its longest
    phases), what auto timed."""
    rows = [("model", report.get("model") or ""), ("capture", report["capture"].get("method", "")),
            ("backend", report.get("backend", "") + (f" ({report['backend_fallback']})" if report.get("backend_fallback") else ""))]
    records = running_stages(report)
    for stage, stage_records in records.items():
        fired = [f"{r['name']}({', '.join(f'{k} {v}' for k, v in r['stats'].items() if v)})" for r in stage_records
                 if r["status"] == "fired"]
        rows.append((f"{stage} passes", ", ".join(fired) or "none fired"))
    bad = [f"{r['name']}: {r['status']} ({r['reason']})" for stage_records in records.values() for r in stage_records
           if r["status"] in ("rolled back", "failed")]
    if bad:
        rows.append(("rolled back", "; ".join(bad)))
    rows.append(("shapes", describe_shapes(report.get("dynamic"))))
    nodes = report.get("nodes") or {}
    rows.append(("nodes", f"{nodes.get('before')} -> {nodes.get('after')}"))
    ver = report.get("verification") or {}
    runtime_check = (report.get("onnx") or {}).get("verification")
    if (report.get("backend") or "") == "openvino":
        runtime_check = (report.get("openvino") or {}).get("verification")
    if runtime_check and (report.get("backend") or "").startswith(("onnxruntime", "openvino")):
        # the error of what runs (int8: its own), on the sets it was checked on
        ver = {"inputs_checked": ver.get("inputs_checked")} | runtime_check
    if ver:
        rows.append(("max error", f"{ver.get('max_abs_error', 0):.3g} abs ({'ok' if ver.get('ok') else 'FAILED'}, {ver.get('inputs_checked')} inputs)"))
    lat = report.get("latency")
    if lat:
        rows.append(("latency", f"eager {lat['eager']['median_ms']:.2f} ms, accelc {lat['accelc']['median_ms']:.2f} ms "
                                f"(median; {lat['speedup']:.2f}x)"))
    from .report import build_time_words

    build = build_time_words(report, longest=4)
    if build:
        rows.append(("build", build))
    choice = dict(report.get("backend_choice") or {})
    chosen = choice.pop("chosen", None)
    if choice:
        label = "auto remembered" if report.get("auto_remembered") else "auto timed"
        rows.append((label, ", ".join(f"{name} {ms:.2f} ms" + (" (kept)" if name == chosen else "")
                                             for name, ms in sorted(choice.items(), key=lambda item: item[1]))))
    for name, why in (report.get("auto_left_out") or {}).items():
        rows.append(("auto left out", f"{name}: {why}"))
    for c in report.get("precision_candidates") or ():
        timed = f", {c['median_ms']:.2f} ms" if c.get("median_ms") is not None else ""
        error = f"error {c['max_rel_error']:.2g}" if c.get("max_rel_error") is not None else "no error measured"
        if c.get("inputs_checked") and c.get("max_rel_error") is not None:
            error += f" on {c['inputs_checked']} input sets"
        partly = f", {len(c['layers_kept_fp32'])} layers kept fp32" if c.get("layers_kept_fp32") else ""
        rows.append(("precision " + ("kept" if c["chosen"] else "tried"),
                     f"{c['precision']} on {c['backend']}{partly}: {error}{timed} ({c['reason']})"))
    if report.get("fallback"):
        rows.append(("fallback", report["fallback"]))
    for warning in report.get("warnings") or ():
        rows.append(("warning", warning))
    return rows


def running_stages(report: dict) -> dict[str, list[dict]]:
    """The pass records of the stages whose output runs: the graph stage, then the lowering stage
    for the PyTorch runtime or the onnx stage for ONNX Runtime (the other was built, not kept)."""
    stages = {"graph": report.get("passes") or []}
    backend = report.get("backend") or ""
    onnx = report.get("onnx") or {}
    if backend.startswith("onnxruntime") and not onnx.get("partial"):
        stages["onnx"] = onnx.get("onnx_passes") or []
    elif backend.startswith("onnxruntime"):  # a partial export: each region has its own onnx stage
        stages["onnx"] = [r for part in (onnx.get("onnx_parts") or {}).values() for r in part.get("onnx_passes", [])]
    elif backend == "openvino":
        pass  # OpenVINO runs the graph stage's output (before precision lowering at bf16), converted to its IR
    elif report.get("runtime_lowering") is not None and not report.get("partition") and not report.get("branches"):
        stages["lowering"] = report.get("runtime_lowering") or []
    return stages


def describe_shapes(dynamic: dict | None) -> str:
    """``input_ids (batch, seq), ...; batch 1.., seq 1..512`` for the summary."""
    if not dynamic:
        return "not captured"
    inputs = ", ".join(f"{i['name']} ({', '.join(map(str, i['shape']))})" for i in dynamic["inputs"])
    ranges = ", ".join(f"{s} {lo}..{'' if hi is None else hi}" for s, (lo, hi) in dynamic["dynamic"].items())
    return f"{inputs}; " + (f"dynamic {ranges}" if ranges else "static")


def _leaves(out):
    from torch.utils._pytree import tree_leaves

    return [x for x in tree_leaves(out) if hasattr(x, "shape")]


COMMANDS = {"optimize": cmd_optimize, "run": cmd_run, "passes": cmd_passes, "explain": cmd_explain, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed in one line
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="accelc: %(message)s", force=True)
    args.logs = CapturedLogs(echo=args.verbose)
    args.log_file = None  # set by a command that writes a folder: where the captured messages went
    try:
        with args.logs:
            code = COMMANDS[args.command](args)
        hidden = args.logs.summary(args.log_file and os.path.relpath(args.log_file))
        if hidden:
            print(hidden, file=sys.stderr)
        return code
    except AccelcError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"accelc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("accelc: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # an accelc bug: say so in one line, keep the traceback for --verbose
        if args.verbose:
            traceback.print_exc()
        print(f"accelc: internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
