"""Build time of two checkouts of accelc, back to back: where a change's saving is smaller than the
machine's drift between runs, only alternating builds of the same model show it.

    git worktree add /tmp/accelc-before <commit>
    python benchmarks/bench_build_ab.py --before /tmp/accelc-before --runs bert:auto,gpt2:onnxruntime --rounds 2

Each build runs in its own process (accelc and its built-in passes imported from that checkout, ``ACCELC_CACHE_DIR=off``,
so ``auto`` times every runtime), before and after alternating, the same threads. Prints one
JSON line per build (total seconds, capture to first answer, and the phases that differ most
between the checkouts) and writes them, with the CPU flags, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402

# The built-in passes are the package ``accelc_passes`` (the folder passes/), which an editable
# install maps to its own checkout whatever sys.path says: imported from the checkout's folder
# first, or the "before" builds would run the "after" passes.
CHECKOUT_PASSES = """
import importlib.util, os, sys
_spec = importlib.util.spec_from_file_location("accelc_passes", os.path.join({checkout!r}, "passes", "__init__.py"),
                                               submodule_search_locations=[os.path.join({checkout!r}, "passes")])
_module = sys.modules["accelc_passes"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
"""

ONE_BUILD = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
torch.set_num_threads({threads})
from run_suite import load_sample, sample_inputs, sample_model
import accelc
m = load_sample({name!r}); model = sample_model(m, small=False).eval(); inputs = sample_inputs(m, small=False, batch=1)
start = time.perf_counter()
fast = accelc.accelerate(model, inputs, backend={backend!r}, measure=False)
fast(*inputs)
total = time.perf_counter() - start
import accelc_passes
assert accelc.__file__.startswith({checkout!r}) and accelc_passes.__file__.startswith({checkout!r})
print(json.dumps({{"accelc": accelc.__file__, "total_s": round(total, 2), "backend": fast.report["backend"],
                  "phases": {{k: round(v, 2) for k, v in fast.report["build_seconds"].items() if k != "total"}}}}))
"""


def one_build(checkout: str, name: str, backend: str, threads: int) -> dict:
    env = os.environ | {"PYTHONPATH": checkout, "ACCELC_CACHE_DIR": "off"}
    code = CHECKOUT_PASSES.format(checkout=checkout) + ONE_BUILD.format(here=HERE, threads=threads, name=name,
                                                                        backend=backend, checkout=checkout)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=checkout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout of the earlier commit")
    parser.add_argument("--after", default=REPO)
    parser.add_argument("--runs", default="bert:auto", help="sample:backend, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "build-time-ab.json"))
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs.split(","):
        name, backend = run.split(":")
        for round_ in range(args.rounds):
            for label, checkout in (("before", args.before), ("after", args.after)):
                row = {"sample": name, "backend_asked": backend, "checkout": label, "round": round_,
                       **one_build(os.path.abspath(checkout), name, backend, args.threads)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_rows(args.out, args.threads, rows)
    return 0


def write_rows(path: str, threads: int, rows: list) -> None:
    """An A/B's rows as JSON, with the CPU flags, the threads and the command that made them."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"cpu_flags": cpu_flags(), "threads": threads,
                   "command": "python " + os.path.relpath(sys.argv[0], REPO) + " " + " ".join(sys.argv[1:]),
                   "rows": rows}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
