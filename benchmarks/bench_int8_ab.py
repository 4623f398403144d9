"""int8 (``--precision int8``, ``--backend onnxruntime``) from two checkouts of accelc: build time,
and the saved ``model.onnx`` files timed against each other in plain ONNX Runtime.

    git worktree add /tmp/accelc-before <commit>
    python benchmarks/bench_int8_ab.py --before /tmp/accelc-before --models bert,gpt2,mlp

Each build runs in its own process (accelc imported from that checkout, ``ACCELC_CACHE_DIR=off``),
before and after alternating, and saves its artifact. Then, in this process, both artifacts'
``model.onnx`` are opened in plain ONNX Runtime sessions (CPU provider, its default optimisation,
the same threads) and timed interleaved on the sample's inputs; each one's relative error against
eager fp32 (max |out − eager| / max |eager|) is measured on the example and on a seeded variant.
``--auto`` also times a ``precision="auto"`` build from each checkout (build time and what it kept).
Writes ``--out`` (JSON) with the CPU flags and prints one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_build_ab import CHECKOUT_PASSES, write_rows  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402

ONE_BUILD = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
torch.set_num_threads({threads})
from run_suite import load_sample, sample_inputs, sample_model
import accelc
m = load_sample({name!r}); model = sample_model(m, small=False).eval(); inputs = sample_inputs(m, small=False, batch=1)
start = time.perf_counter()
fast = accelc.accelerate(model, inputs, backend={backend!r}, precision={precision!r})
fast(*inputs)
total = time.perf_counter() - start
import accelc_passes
assert accelc.__file__.startswith({checkout!r}) and accelc_passes.__file__.startswith({checkout!r})
if {folder!r}:
    fast.save({folder!r})
print(json.dumps({{"build_s": round(total, 2), "backend": fast.report["backend"], "precision": fast.report["precision"],
                  "phases": {{k: round(v, 2) for k, v in fast.report["build_seconds"].items() if k != "total"}}}}))
"""


def one_build(checkout: str, name: str, backend: str, precision: str, threads: int, folder: str) -> dict:
    env = os.environ | {"PYTHONPATH": checkout, "ACCELC_CACHE_DIR": "off"}
    code = CHECKOUT_PASSES.format(checkout=checkout) + ONE_BUILD.format(
        here=HERE, threads=threads, name=name, backend=backend, precision=precision, folder=folder, checkout=checkout)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=checkout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def plain_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def session_callable(session):
    names = [i.name for i in session.get_inputs()]

    def call(*inputs):
        return session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})

    return call


def relative_error(got: list, expected) -> float:
    expected = [e.numpy() for e in (expected if isinstance(expected, (tuple, list)) else [expected])]
    return max(float(np.abs(g - e).max() / max(float(np.abs(e).max()), 1e-12)) for g, e in zip(got, expected))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout of the earlier commit")
    parser.add_argument("--after", default=REPO)
    parser.add_argument("--models", default="bert,gpt2,mlp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="interleaved timing per sample")
    parser.add_argument("--auto", action="store_true", help="also build precision='auto' from each checkout")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "int8-ab.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accelc.timing import compare_latency
    from accelc.verify import random_inputs_like

    checkouts = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="accelc-int8-ab-") as work:
        for name in args.models.split(","):
            module = load_sample(name)
            model, inputs = sample_model(module, small=False).eval(), sample_inputs(module, small=False, batch=1)
            calls = {}
            for label, checkout in checkouts.items():
                folder = os.path.join(work, f"{name}-{label}")
                row = {"sample": name, "checkout": label, "precision_asked": "int8",
                       **one_build(checkout, name, "onnxruntime", "int8", args.threads, folder)}
                calls[label] = session_callable(plain_session(os.path.join(folder, "model.onnx"), args.threads))
                variant = random_inputs_like(inputs, seed=7)
                with torch.inference_mode():
                    row["error_example"] = round(relative_error(calls[label](*inputs), model(*inputs)), 5)
                    row["error_variant"] = round(relative_error(calls[label](*variant), model(*variant)), 5)
                rows.append(row)
            timings = compare_latency(calls, [inputs, random_inputs_like(inputs, seed=7)], seconds=args.seconds)
            for row in rows[-2:]:
                row["plain_ort_median_ms"] = round(timings[row["checkout"]].median_ms, 3)
                print(json.dumps(row), flush=True)
            if args.auto:
                for label, checkout in checkouts.items():
                    row = {"sample": name, "checkout": label, "precision_asked": "auto",
                           **one_build(checkout, name, "auto", "auto", args.threads, "")}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    write_rows(args.out, args.threads, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
