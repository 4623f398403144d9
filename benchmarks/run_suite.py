"""The benchmark suite: every sample at batch 1 and 8, every system, one results file per device.

    samples/*.py ──► (model, inputs at batch 1 / 8) ──► accelc.bench.run_bench ──► results JSON
                                                                             └──► BENCHMARKS.md + SVG plot

Full size (the default): text models at sequence 128, image models at 224x224 (the samples'
defaults; the CNN and MLP keep their own small shapes). Batch 8 stacks the sample's inputs drawn
with seeds 0..7 along dim 0 (same mask layout, different tokens / pixels).

Sized for a 2-core CI machine: the timing budget per configuration is short (``--seconds``) and
the whole run stops starting new configurations after ``--budget-minutes``, saying which it left
out. Results go to ``benchmarks/results/<device>-<date>.json`` and ``BENCHMARKS.md`` is rendered
from the newest file per device.

    python benchmarks/run_suite.py                 # full suite on CPU
    python benchmarks/run_suite.py --quick         # smoke run: small variants, short timings,
                                                   # written to a temporary folder
    python benchmarks/run_suite.py --device cuda   # fp32 and fp16 on the GPU
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SAMPLES_DIR = os.path.join(REPO, "samples")
SAMPLES = ["cnn", "mlp", "multibranch_cnn", "bert", "gpt2", "vit", "resnet50"]

sys.path.insert(0, HERE)
from render import RESULTS_DIR, MARKDOWN, write_all  # noqa: E402

from accelc.bench import DEFAULT_SYSTEMS, ProgressBar, format_table, run_bench  # noqa: E402
from accelc.verify import random_inputs_like  # noqa: E402


def load_sample(name: str):
    """Import ``samples/<name>.py`` (its folder on sys.path, as `python samples/<name>.py` would)."""
    path = os.path.join(SAMPLES_DIR, f"{name}.py")
    if SAMPLES_DIR not in sys.path:
        sys.path.insert(0, SAMPLES_DIR)
    spec = importlib.util.spec_from_file_location(f"accelc_sample_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def sample_model(module, small: bool) -> torch.nn.Module:
    kwargs = {"small": small} if _accepts(module.get_model, "small") else {}
    return module.get_model(**kwargs).eval()


def sample_inputs(module, small: bool, batch: int) -> tuple:
    """The sample's inputs at ``batch``: rows drawn with seeds 0..batch-1, stacked on dim 0."""
    kwargs = {"small": small} if _accepts(module.get_inputs, "small") else {}
    first = tuple(module.get_inputs(**kwargs))
    if batch == 1:
        return first
    if _accepts(module.get_inputs, "seed"):
        rows = [first] + [tuple(module.get_inputs(seed=k, **kwargs)) for k in range(1, batch)]
    else:
        rows = [first] + [random_inputs_like(first, seed=k) for k in range(1, batch)]
    return tuple(torch.cat([row[i] for row in rows], dim=0) for i in range(len(first)))


def device_tag(device: str) -> str:
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    name = torch.cuda.get_device_name(dev).lower().replace("nvidia", "")
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="accelc benchmark suite")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sample variants, short timings, temporary output")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None, help="comma-separated; default fp32 on CPU, fp32,fp16 on CUDA")
    parser.add_argument("--models", default=",".join(SAMPLES), help="comma-separated sample names")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--against", default=",".join(DEFAULT_SYSTEMS), help="systems to compare (see accelc bench)")
    parser.add_argument("--max-autotune", action="store_true", help="also time torch.compile max-autotune (slow to build)")
    parser.add_argument("--seconds", type=float, default=None, help="timing budget per configuration (default 3, quick 0.3)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="start no new configuration after this (default 27, quick 10)")
    parser.add_argument("--out", default=None, help=f"results folder (default {os.path.relpath(RESULTS_DIR, REPO)}; quick: a temporary folder)")
    parser.add_argument("--markdown", default=None, help="markdown to render (default BENCHMARKS.md; quick: in the results folder)")
    args = parser.parse_args(argv)
    # A script, not the library: quiet the exporter's note about optional torchvision ops.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    cuda = torch.device(args.device).type == "cuda"
    precisions = (args.precision or ("fp32,fp16" if cuda else "fp32")).split(",")
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 3.0)
    budget_s = 60 * (args.budget_minutes if args.budget_minutes is not None else (10 if args.quick else 27))
    out_dir = args.out or (tempfile.mkdtemp(prefix="accelc-suite-") if args.quick else RESULTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    markdown = args.markdown or (os.path.join(out_dir, "BENCHMARKS.md") if args.quick else MARKDOWN)
    tag = device_tag(args.device)
    date = datetime.date.today().isoformat()
    results_path = os.path.join(out_dir, f"{tag}-{date}{'-quick' if args.quick else ''}.json")
    warmup, min_iterations = (1, 2) if args.quick else (2, 3)

    names = [n for n in args.models.split(",") if n]
    available = [n for n in names if os.path.exists(os.path.join(SAMPLES_DIR, f"{n}.py"))]
    batches = [int(b) for b in args.batches.split(",")]
    # Batch 1 of every model first, so a run cut short by the budget still covers every model.
    configs = [(p, b, n) for p in precisions for b in batches for n in available]
    notes = [
        f"timing: {seconds:g} s per configuration shared by all systems in interleaved rounds, "
        f"{warmup} warm-up calls and at least {min_iterations} rounds each"
        + (" (reduced so the suite fits a 2-core machine in 30 minutes)" if not args.quick else " (quick smoke run)"),
        "memory: RSS growth while each system is built, in the JSON (CUDA: torch allocator growth)" if not cuda
        else "memory: CUDA memory allocated by torch while building, and device memory used (sees ONNX Runtime), in the JSON",
    ]
    if args.quick:
        notes.append("quick: small variants of the samples (tiny configs), not representative of full-size speed")
    missing = [n for n in names if n not in available]
    if missing:
        notes.append(f"samples not present: {', '.join(missing)}")

    print(f"accelc benchmark suite: {len(configs)} configurations on {tag}; {notes[0]}", file=sys.stderr)
    start = time.perf_counter()
    runs = []
    for k, (precision, batch, name) in enumerate(configs):
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            left = [f"{n} b{b} {p}" for p, b, n in configs[k:]]
            notes.append(f"stopped after {elapsed / 60:.1f} min (budget {budget_s / 60:g} min); not run: {', '.join(left)}")
            print(notes[-1], file=sys.stderr)
            break
        module = load_sample(name)
        model = sample_model(module, small=args.quick)
        inputs = sample_inputs(module, small=args.quick, batch=batch)
        bar = ProgressBar(prefix=f"[{k + 1}/{len(configs)}] {name} b{batch} {precision} ")
        try:
            result = run_bench(model, inputs, systems=args.against.split(","), device=args.device, precision=precision,
                               max_autotune=args.max_autotune, seconds=seconds, warmup=warmup,
                               min_iterations=min_iterations, model_name=name, progress=bar)
        finally:
            bar.close()
        print(format_table(result) + "\n", flush=True)
        runs.append({"sample": name, "batch": batch, "precision": precision, "small": args.quick, "result": result.to_dict()})
        del model, inputs
        _write(results_path, tag, date, args, seconds, notes, runs, time.perf_counter() - start, result)
    if not runs:
        print("no configuration ran", file=sys.stderr)
        return 1
    write_all(out_dir, markdown, files=[results_path])
    print(f"wrote {results_path} and {markdown} in {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr)
    return 0


def _write(path, tag, date, args, seconds, notes, runs, elapsed, last) -> None:
    """Rewrite the results file after every configuration, so an interrupted run keeps its numbers."""
    suite = {
        "device": args.device, "device_tag": tag, "date": date, "quick": args.quick, "seconds": seconds,
        "threads": last.threads, "machine": last.machine, "versions": last.versions, "notes": notes,
        "elapsed_s": round(elapsed, 1),
        "command": "python benchmarks/run_suite.py " + " ".join(sys.argv[1:]),
    }
    with open(path, "w") as f:
        json.dump({"suite": suite, "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
