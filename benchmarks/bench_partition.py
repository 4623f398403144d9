"""Partitioning benchmark: plans per sample, measured stage balance, pipeline and branch throughput.

    python benchmarks/bench_partition.py                # full-size samples (minutes)
    python benchmarks/bench_partition.py --small        # tiny variants, a quick smoke run
    python benchmarks/bench_partition.py --json out.json --trace-dir traces/

Sections:
1. plans: for every sample, 2 and 4 stages: estimated stage costs and cut bytes.
2. balance: BERT and ResNet-50 in 2 and 4 stages, each stage timed alone (median of runs);
   slowest stage / mean stage (the issue asks for <= 1.25).
3. throughput (samples/s, batch = micro-batches x captured batch):
   eager at the full batch with all threads; 1 stage with all threads, micro-batches in turn;
   S single-thread stages pipelined (threads = S); branch parallel on the multi-branch CNN.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))

from accelc.capture import capture  # noqa: E402
from accelc.partition import make_plan  # noqa: E402
from accelc.partition.partitioner import build_stage_module  # noqa: E402
from accelc.runtime.branches import build_branch_executor  # noqa: E402
from accelc.runtime.pipeline import build_executor  # noqa: E402

SAMPLES = ["cnn", "mlp", "bert", "gpt2", "vit", "resnet50", "multibranch_cnn"]


def load(name: str, small: bool):
    import importlib

    mod = importlib.import_module(name)
    model, inputs = mod.get_model(small=small).eval(), tuple(mod.get_inputs(small=small))
    return model, inputs, capture(model, inputs).graph_module


def batched(inputs, m):
    return tuple(torch.cat([x] * m) if isinstance(x, torch.Tensor) else x for x in inputs)


def timed(fn, seconds: float, min_runs: int = 3) -> float:
    """Median seconds per call after one warm-up."""
    with torch.inference_mode():
        fn()
        samples, deadline = [], time.perf_counter() + seconds
        while len(samples) < min_runs or time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def section_plans(small: bool) -> dict:
    out = {}
    for name in SAMPLES:
        try:
            _, inputs, gm = load(name, small)
        except Exception as exc:  # a sample missing or failing to capture: report and go on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[name] = {}
        for stages in (2, 4):
            plan = make_plan(gm, inputs, stages=stages)
            out[name][stages] = {"stage_ms": [round(s.cost_s * 1e3, 3) for s in plan.stages],
                                 "nodes": [len(s.nodes) for s in plan.stages],
                                 "cut_bytes": [c.bytes for c in plan.cuts], "balance_est": round(plan.balance(), 3)}
            print(f"{name:16s} {stages} stages: est ms {out[name][stages]['stage_ms']} cut bytes {out[name][stages]['cut_bytes']}")
    return out


def section_balance(small: bool, seconds: float) -> dict:
    out = {}
    for name in ("bert", "resnet50"):
        _, inputs, gm = load(name, small)
        for stages in (2, 4):
            for profile in (False, True):
                plan = make_plan(gm, inputs, stages=stages, profile=profile)
                env = dict(zip(plan.graph_inputs, inputs))
                times = []
                for s in plan.stages:
                    mod = build_stage_module(gm, plan, s.index)
                    args = [env[i] for i in s.inputs]
                    times.append(timed(lambda: mod(*args), seconds / (2 * stages)))
                    with torch.inference_mode():
                        env.update(zip(s.outputs, mod(*args)))
                ratio = max(times) / statistics.mean(times)
                key = f"{name}/{stages}/{'profiled' if profile else 'static'}"
                out[key] = {"stage_ms": [round(t * 1e3, 3) for t in times], "slowest_over_mean": round(ratio, 3)}
                print(f"balance {key:26s} stage ms {out[key]['stage_ms']} slowest/mean {ratio:.2f}")
    return out


def section_throughput(small: bool, seconds: float, microbatches: int, trace_dir: Path | None) -> dict:
    out = {}
    threads = torch.get_num_threads()
    for name in ("bert", "resnet50", "multibranch_cnn"):
        model, inputs, gm = load(name, small)
        batch = batched(inputs, microbatches)
        n = batch[0].shape[0]
        rows = {}
        rows[f"eager batch {n}, {threads} threads"] = timed(lambda: model(*batch), seconds)
        one = build_executor(gm, make_plan(gm, inputs, stages=1, total_threads=threads), microbatches)
        rows[f"1 stage x {threads} threads, {microbatches} micro-batches"] = timed(lambda: one(*batch), seconds)
        for stages in (2,):
            plan = make_plan(gm, inputs, stages=stages, total_threads=stages)  # one thread per stage
            pipe = build_executor(gm, plan, microbatches)
            rows[f"{stages} stages x 1 thread pipelined, {microbatches} micro-batches"] = timed(lambda: pipe(*batch), seconds)
            if trace_dir is not None:
                trace_dir.mkdir(parents=True, exist_ok=True)
                pipe.timeline.save_chrome_trace(trace_dir / f"{name}_{stages}stages.json")
        # graphs are shape-specialised: branch parallel runs a graph captured at the full batch
        gm_full = capture(model, batch).graph_module
        branch = build_branch_executor(gm_full, workers=2, threads_per_worker=max(1, threads // 2))
        rows[f"branch parallel 2 workers x {max(1, threads // 2)} thread(s), batch {n}"] = timed(lambda: branch(*batch), seconds)
        out[name] = {k: round(n / v, 2) for k, v in rows.items()}
        for k, v in out[name].items():
            print(f"throughput {name:16s} {k:50s} {v:9.2f} samples/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="tiny sample variants (smoke run)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement")
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--trace-dir", type=Path, default=None, help="save Chrome traces of the pipelined runs here")
    ns = parser.parse_args()
    torch.manual_seed(0)
    result = {"threads": torch.get_num_threads(), "small": ns.small, "microbatches": ns.microbatches,
              "plans": section_plans(ns.small), "balance": section_balance(ns.small, ns.seconds),
              "throughput": section_throughput(ns.small, ns.seconds, ns.microbatches, ns.trace_dir)}
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
