"""Build time: capture to first answer, accelc (``backend="auto"``) against torch.compile with
freezing and OpenVINO.

    python benchmarks/bench_build.py                     # every sample, batch 1, full size
    python benchmarks/bench_build.py --models bert,cnn

All are timed one after the other per sample, same threads: accelc from ``accelerate()`` to
the first call's answer, twice: its first build (no remembered choice: ``auto`` builds and
times every runtime) and a rebuild (the runtime the first kept is built alone, see
``accelc/decisions.py``); torch.compile (inductor, ``freezing=True``, as ``accelc bench`` builds
it) from ``torch.compile`` to the first call's answer, which is when it compiles, twice: cold
(its own process, an empty inductor cache: a user's first build) and warm (in this process,
after the cold build filled the cache it reads, as a user's later builds of the same model do); OpenVINO (when installed) from ``convert_model`` through ``compile_model`` to the
first answer, at its default precision, as the bench's ``openvino`` row builds it. accelc's
time is split into the phases its report records (``report["build_seconds"]``: capture, eager
references, graph stage, final check, lowering, ONNX export, each runtime's build, the checks,
the auto timing). Writes ``benchmarks/results/build-time.json`` and prints a markdown table with
the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import SAMPLES, load_sample, sample_inputs, sample_model  # noqa: E402

import accelc  # noqa: E402

OUT = os.path.join(HERE, "results", "build-time.json")


def accelc_build(model, inputs, backend: str) -> dict:
    start = time.perf_counter()
    fast = accelc.accelerate(model, inputs, backend=backend)
    fast(*inputs)
    total = time.perf_counter() - start
    phases = dict(fast.report.get("build_seconds") or {})
    phases.pop("total", None)
    phases["first call and glue"] = total - sum(phases.values())
    return {"seconds": round(total, 2), "backend": fast.report["backend"], "remembered": "auto_remembered" in fast.report,
            "phases": {k: round(v, 2) for k, v in phases.items()}}


def _phases(build: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(build["phases"].items(), key=lambda kv: -kv[1]) if v >= 0.05)


def openvino_build(model, inputs, threads: int) -> float | None:
    """OpenVINO's build as its users run it: convert_model, compile_model (its default precision),
    the first answer. None when OpenVINO is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    from accelc.bench.openvino import OpenVinoRunner, compile_for_cpu, convert
    from accelc.bench.ort import _input_names

    start = time.perf_counter()
    try:
        compiled, _ = compile_for_cpu(convert(model, inputs), threads, f32=False)
        OpenVinoRunner(compiled, _input_names(model, len(inputs)))(*inputs)
    except Exception as exc:  # GPT-2: convert_model has no rule for aten::diff
        print(f"OpenVINO failed: {str(exc).splitlines()[0][:160]}", file=sys.stderr)
        return None
    return round(time.perf_counter() - start, 2)


def compile_cold_build(name: str, batch: int, threads: int) -> float:
    """torch.compile with freezing as a user's first run meets it: in a fresh process with an
    empty inductor cache (its FX graph, AOTAutograd and kernel caches live on disk, so a second
    build in the same place reuses them: that is :func:`compile_freezing_build`)."""
    code = (f"import sys, json, torch; sys.path.insert(0, {HERE!r}); torch.set_num_threads({threads});"
            "from run_suite import load_sample, sample_inputs, sample_model;"
            "from bench_build import compile_freezing_build;"
            f"m = load_sample({name!r}); model = sample_model(m, small=False);"
            f"print(json.dumps(compile_freezing_build(model, sample_inputs(m, small=False, batch={batch}))))")
    with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache})
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_freezing_build(model, inputs) -> float:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    start = time.perf_counter()
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled = torch.compile(model)
        compiled(*inputs)
    return round(time.perf_counter() - start, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SAMPLES))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        module = load_sample(name)
        model = sample_model(module, small=False)
        inputs = sample_inputs(module, small=False, batch=args.batch)
        with tempfile.TemporaryDirectory(prefix="accelc-choices-") as choices:
            os.environ["ACCELC_CACHE_DIR"] = choices  # empty: the first build times every runtime
            cold = accelc_build(model, inputs, args.backend)
            warm = accelc_build(model, inputs, args.backend)  # builds the runtime the first one kept
        row = {"sample": name, "batch": args.batch, "accelc": cold, "accelc_warm": warm,
               "compile_cold_s": compile_cold_build(name, args.batch, args.threads),
               "compile_freezing_s": compile_freezing_build(model, inputs),
               "openvino_s": openvino_build(model, inputs, args.threads)}
        row["accelc_over_compile"] = round(row["accelc"]["seconds"] / row["compile_freezing_s"], 2)
        row["accelc_over_compile_cold"] = round(row["accelc"]["seconds"] / row["compile_cold_s"], 2)
        row["accelc_warm_over_compile_warm"] = round(warm["seconds"] / row["compile_freezing_s"], 2)
        if row["openvino_s"]:
            row["accelc_over_openvino"] = round(row["accelc"]["seconds"] / row["openvino_s"], 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"cpu_flags": cpu_flags(), "threads": args.threads, "torch": torch.__version__,
                       "command": "python benchmarks/bench_build.py " + " ".join(sys.argv[1:]), "rows": rows}, f, indent=1)
            f.write("\n")
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; batch {args.batch}; accelc backend={args.backend}\n")
    print("| sample | accelc first build s | kept | torch.compile+freezing cold s | accelc first / compile cold "
          "| accelc rebuild s | torch.compile warm s | accelc rebuild / compile warm | OpenVINO s "
          "| accelc first / OpenVINO |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sample']} | {r['accelc']['seconds']} | {r['accelc']['backend']} | {r['compile_cold_s']} | "
              f"{r['accelc_over_compile_cold']} | {r['accelc_warm']['seconds']} | {r['compile_freezing_s']} | "
              f"{r['accelc_warm_over_compile_warm']} | {r['openvino_s'] or '–'} | {r.get('accelc_over_openvino', '–')} |")
    print("\n| sample | accelc first build's phases (s) | rebuild's phases (s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['sample']} | {_phases(r['accelc'])} | {_phases(r['accelc_warm'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
