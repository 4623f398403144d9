"""ONNX Runtime benchmark: eager vs ORT on a plain export vs ORT + onnxruntime.transformers
optimizer (dynamo and TorchScript exports) vs accelc's ORT path, per sample, batch and sequence.

    python benchmarks/bench_onnxruntime.py --json benchmarks/results/onnxruntime_cpu.json
    python benchmarks/bench_onnxruntime.py --small --samples bert,vit --batches 1 --seqs 16 --seconds 0.5

Every system of one configuration is timed in the same process, in interleaved rounds
(accelc.timing.compare_latency), so the medians are comparable; each configuration gets a fresh
process (see run_isolated). Each ONNX Runtime system runs as ``--sessions`` sessions of its own
(default 2; accelc's extra ones load its saved artifact), timed side by side, and its latency is
the mean of their medians: two sessions on one model differ by up to a few percent, and one
session per system would charge that to the model. An A/A control, a second set of sessions
on the same plain export, is timed with them: ``aa_ratio`` (ORT default over its twin) is how far
two identical systems drift apart in that run, the noise floor for every other ratio in the row. For each ORT model the script
also records the max error against eager and attention found / present (fused Attention or
MultiHeadAttention nodes vs the Softmax-based attention blocks of the plain export).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "samples"))

import accelc  # noqa: E402
from accelc.onnx.session import disabled_fusions, session_options  # noqa: E402
from accelc.timing import compare_latency  # noqa: E402
from accelc.verify import compare_outputs, flat_outputs  # noqa: E402

MODEL_TYPE = {"bert": "bert", "gpt2": "gpt2", "vit": "vit"}
SEQ_SAMPLES = ("bert", "gpt2")
ATTENTION_OPS = ("Attention", "MultiHeadAttention", "PackedAttention", "GroupQueryAttention")


def make_inputs(name: str, module, small: bool, batch: int, seq: int | None) -> tuple:
    base = tuple(module.get_inputs(small=small))
    if name in SEQ_SAMPLES and seq is not None:
        vocab = module.get_config(small).vocab_size
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        if name == "bert":
            mask = torch.ones(batch, seq, dtype=torch.int64)
            mask[:, seq - max(1, seq // 16):] = 0
            return ids, mask, torch.zeros(batch, seq, dtype=torch.int64)
        return (ids,)
    return tuple(torch.cat([x] * batch) if x.dim() > 0 else x for x in base)


def ort_callable(path: str, names: list[str], accelc_fusions: bool = False):
    """A CPU session on ``path`` called like the model (``names``: one per argument). With
    ``accelc_fusions`` it leaves out the ORT fusions accelc's own sessions leave out."""
    disabled = disabled_fusions("CPUExecutionProvider") if accelc_fusions else None
    session = ort.InferenceSession(path, sess_options=session_options(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled)
    wanted = [i.name for i in session.get_inputs()]

    def run(*args):
        feeds = {n: a.numpy() for n, a in zip(names, args) if n in wanted}
        return [torch.from_numpy(np.ascontiguousarray(o)) for o in session.run(None, feeds)]

    return run


def attention_counts(path: str) -> int:
    model = onnx.load(path, load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type in ATTENTION_OPS)


def export_plain(model, inputs, path: str, dynamo: bool, names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, inputs, dynamo=True, opset_version=20).save(path)
        else:
            torch.onnx.export(model, inputs, path, dynamo=False, opset_version=17, input_names=names)


def transformers_optimized(src: str, dst: str, sample: str, config) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    optimized = optimize_model(src, model_type=MODEL_TYPE[sample], num_heads=heads, hidden_size=hidden)
    optimized.save_model_to_file(dst)
    return dst


def bench_one(sample: str, small: bool, batch: int, seq: int | None, seconds: float, workdir: str,
              sessions: int = 2) -> dict:
    import importlib

    module = importlib.import_module(sample)
    model = module.get_model(small=small).eval()
    inputs = make_inputs(sample, module, small, batch, seq)
    names = [f"input_{i}" for i in range(len(inputs))]
    names_dynamo = list(model.forward.__code__.co_varnames[1:1 + len(inputs)])
    with torch.inference_mode():
        expected = flat_outputs(model(*inputs))
    systems, notes, attention = {"eager": model}, {}, {}
    tag = f"{sample}_b{batch}_s{seq}"

    plain = os.path.join(workdir, f"{tag}_dynamo.onnx")
    export_plain(model, inputs, plain, True, names_dynamo)
    present = sum(1 for n in onnx.load(plain, load_external_data=False).graph.node if n.op_type == "Softmax")
    opened = {}  # per ORT system: how to open one more session of it
    for key in ("ort_default", "aa_ort_default_twin"):
        opened[key] = lambda: ort_callable(plain, names_dynamo)
        systems[key] = opened[key]()
    if sample in MODEL_TYPE:
        config = module.get_config(small)
        for exporter in ("dynamo", "torchscript"):
            key = f"ort_transformers_{exporter}"
            try:
                src = plain
                if exporter == "torchscript":
                    src = os.path.join(workdir, f"{tag}_ts.onnx")
                    export_plain(model, inputs, src, False, names)
                dst = transformers_optimized(src, os.path.join(workdir, f"{tag}_{exporter}_opt.onnx"), sample, config)
                feed_names = names_dynamo if exporter == "dynamo" else names
                open_session = lambda dst=dst, feed_names=feed_names: ort_callable(dst, feed_names)  # noqa: E731
                systems[key] = open_session()  # the optimizer's model must at least open
                opened[key] = open_session
                attention[key] = attention_counts(dst)
            except Exception as exc:  # the optimizer fails outright on some exports: record it
                notes[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"

    start = time.perf_counter()
    # The whole accelc path: capture, the default fx pipeline, export, ONNX passes, session.
    fast = accelc.accelerate(model, inputs, backend="onnxruntime")
    if fast.report.get("backend") != "onnxruntime":
        raise RuntimeError(f"accelc did not build its ONNX Runtime backend: {fast.report.get('backend_fallback') or fast.report.get('fallback')}")
    report = fast.report["onnx"]
    build_seconds = time.perf_counter() - start
    artifact = fast.save(os.path.join(workdir, f"{tag}_accelc"))
    systems["accelc_ort"], opened["accelc_ort"] = fast, lambda: accelc.load(artifact)
    passes = {r["name"]: r["stats"] for r in report.get("onnx_passes", [])}
    attention["accelc_ort"] = passes.get("fuse_attention", {}).get("fused", 0)

    errors = {}
    for key, fn in systems.items():
        with torch.inference_mode():
            got = flat_outputs(fn(*inputs))
        errors[key] = compare_outputs(got, expected).max_abs_error
    timed = dict(systems)
    for key, open_session in opened.items():
        timed.update({f"{key}#{i}": open_session() for i in range(1, sessions)})
    by_session = compare_latency(timed, [inputs], seconds=seconds)
    timings = {key: by_session[key].median_ms for key in systems}
    session_ms = {key: [round(by_session[k].median_ms, 3) for k in by_session if k == key or k.startswith(key + "#")]
                  for key in opened}
    timings.update({key: float(np.mean(ms)) for key, ms in session_ms.items()})
    eager_ms = timings["eager"]
    baselines = [timings[k] for k in timings if k.startswith("ort_")]  # not the A/A twin
    return {
        "sample": sample, "small": small, "batch": batch, "seq": seq,
        "median_ms": {k: round(t, 3) for k, t in timings.items()},
        "session_median_ms": session_ms,
        "speedup_vs_eager": {k: round(eager_ms / t, 3) for k, t in timings.items()},
        "accelc_vs_best_ort": round(min(baselines) / timings["accelc_ort"], 3) if baselines else None,
        "aa_ratio": round(timings["ort_default"] / timings["aa_ort_default_twin"], 3),
        "max_abs_error": errors,
        "attention_present": present,
        "attention_found": attention,
        "provider": report.get("providers", {}).get("used"),
        "accelc_passes": passes,
        "accelc_build_seconds": round(build_seconds, 2),
        "notes": notes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="bert,gpt2,vit,resnet50")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seqs", default="128,512", help="sequence lengths for bert and gpt2")
    parser.add_argument("--small", action="store_true", help="small variants (a quick check that the script works)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing budget per configuration")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per ONNX Runtime system (their mean is its latency)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # sample,batch,seq: one row, JSON on stdout
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.one:
        sample, batch, seq = args.one.split(",")
        with tempfile.TemporaryDirectory() as workdir:
            row = bench_one(sample, args.small, int(batch), int(seq) if seq != "None" else None, args.seconds, workdir,
                            args.sessions)
        print("ROW " + json.dumps(row), flush=True)
        return 0
    results = []
    for sample in args.samples.split(","):
        seqs = [int(s) for s in args.seqs.split(",")] if sample in SEQ_SAMPLES else [None]
        for batch in (int(b) for b in args.batches.split(",")):
            for seq in seqs:
                row = run_isolated(sample, batch, seq, args)
                results.append(row)
                print(json.dumps({k: row[k] for k in ("sample", "batch", "seq", "median_ms", "accelc_vs_best_ort", "aa_ratio",
                                                     "attention_present", "attention_found")}), flush=True)
    write_results(args.json, results)
    return 0


def run_isolated(sample: str, batch: int, seq: int | None, args) -> dict:
    """One row in a fresh process. In one long process, sessions created late in a row ran up to
    14% slower than the row's first sessions (CNN b1: accelc 0.86x of ORT default there, 1.02x in
    a process of its own), so no row inherits the memory and threads of the rows before it."""
    command = [sys.executable, os.path.abspath(__file__), "--one", f"{sample},{batch},{seq}", "--seconds", str(args.seconds),
               "--sessions", str(args.sessions)]
    if args.small:
        command.append("--small")
    done = subprocess.run(command, capture_output=True, text=True)
    rows = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"{sample} b{batch} s{seq} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return json.loads(rows[-1])


def write_results(path: str | None, results: list[dict], **machine) -> None:
    """Write ``results`` to ``path`` (when given) with the versions and machine they came from."""
    if not path:
        return
    out = {"torch": torch.__version__, "onnxruntime": ort.__version__, "machine": platform.machine(),
           "threads": torch.get_num_threads(), **machine, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
