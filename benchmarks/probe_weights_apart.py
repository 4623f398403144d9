"""What opening an ONNX Runtime session costs with the weights inside the serialised model, and
with them apart (``accelc/onnx/weights_apart.py``), on a sample's export.

    python benchmarks/probe_weights_apart.py                 # GPT-2
    python benchmarks/probe_weights_apart.py --model bert --rounds 4

The sample's graph is exported once as accelc's build exports it; then each way is timed alone
(the other's session closed first; which goes first alternates) from the onnx stage's model (``ir.Model``) to an open CPU session at ORT's full
optimisation: serialise the model (``ir.serde.serialize_model`` + ``SerializeToString``) and open
the bytes, against :func:`weights_apart` and open the graph bytes with the weights handed over.
Both sessions' answers on the example are compared. After the last round, the two sessions and a
third opened from the files the artifact holds (model.onnx and model.onnx.data) are timed
interleaved on the example (``accelc.timing.compare_latency``): how the weights reach ONNX
Runtime must not change how fast it runs. Prints one JSON line per round and one for the timing,
with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402
from run_suite import load_sample, sample_inputs, sample_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="interleaved timing of the sessions")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import onnx_ir as ir
    import onnxruntime as ort

    from accelc.onnx.build import export_for_runtimes
    from accelc.onnx.weights_apart import weights_apart

    module = load_sample(args.model)
    model, inputs = sample_model(module, small=False), sample_inputs(module, small=False, batch=1)
    gm = torch.export.export(model, inputs).module()
    exported = export_for_runtimes(gm, inputs, None)
    graph = ir.serde.deserialize_model(exported.model)
    feeds = {i.name: x.numpy() for i, x in zip(exported.model.graph.input, inputs)}
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; {args.model}", file=sys.stderr)

    def options():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        return opts

    def open_whole():
        start = time.perf_counter()
        data = ir.serde.serialize_model(graph).SerializeToString()
        serialised = time.perf_counter()
        session = ort.InferenceSession(data, options(), providers=["CPUExecutionProvider"])
        return session, {"serialise_s": round(serialised - start, 3), "open_s": round(time.perf_counter() - serialised, 3)}

    def open_apart():
        start = time.perf_counter()
        apart = weights_apart(graph)
        split = time.perf_counter()
        opts = options()
        apart.add_to(opts)
        session = ort.InferenceSession(apart.graph_bytes, opts, providers=["CPUExecutionProvider"])
        return session, {"split_s": round(split - start, 3), "open_s": round(time.perf_counter() - split, 3),
                         "graph_bytes": len(apart.graph_bytes), "weights_bytes": sum(a.nbytes for a in apart.arrays)}

    # Each way alone (the other's session closed first), which one goes first alternating: the
    # open's time moves with what the machine has just allocated and freed.
    for round_ in range(args.rounds):
        ways = [("whole", open_whole), ("apart", open_apart)]
        row, answers = {"model": args.model, "round": round_}, {}
        for name, way in ways if round_ % 2 == 0 else ways[::-1]:
            session, row[name] = way()
            answers[name] = session.run(None, feeds)
            del session
        row["same_answers"] = all(np.array_equal(a, b) for a, b in zip(answers["whole"], answers["apart"]))
        print(json.dumps(row), flush=True)
    whole, _ = open_whole()
    separate, _ = open_apart()
    apart = weights_apart(graph)
    from accelc.timing import compare_latency

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        apart.write(path)
        from_files = ort.InferenceSession(path, options(), providers=["CPUExecutionProvider"])
        sessions = {"whole": whole, "apart": separate, "files": from_files}
        timings = compare_latency({name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}, [()],
                                  seconds=args.seconds)
    print(json.dumps({"model": args.model, "median_ms": {name: round(t.median_ms, 2) for name, t in timings.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
