"""What opening an ONNX Runtime session costs with the weights inside the serialised model, and
with them apart (``accelc/onnx/weights_apart.py``), on a sample's export.

    python benchmarks/probe_weights_apart.py                 # GPT-2
    python benchmarks/probe_weights_apart.py --model bert --rounds 4

The sample's graph is exported once as accelc's build exports it; then, alternating, each way
is timed from the onnx stage's model (``ir.Model``) to an open CPU session at ORT's full
optimisation: serialise the model (``ir.serde.serialize_model`` + ``SerializeToString``) and open
the bytes, against :func:`weights_apart` and open the graph bytes with the weights handed over.
Both sessions' answers on the example are compared. Prints one JSON line per round, with the
CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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

    for round_ in range(args.rounds):
        start = time.perf_counter()
        data = ir.serde.serialize_model(graph).SerializeToString()
        serialised = time.perf_counter()
        whole = ort.InferenceSession(data, options(), providers=["CPUExecutionProvider"])
        opened = time.perf_counter()
        del data
        apart = weights_apart(graph)
        split = time.perf_counter()
        opts = options()
        apart.add_to(opts)
        separate = ort.InferenceSession(apart.graph_bytes, opts, providers=["CPUExecutionProvider"])
        opened_apart = time.perf_counter()
        same = all(np.array_equal(a, b) for a, b in zip(whole.run(None, feeds), separate.run(None, feeds)))
        print(json.dumps({"model": args.model, "round": round_, "same_answers": same,
                          "whole": {"serialise_s": round(serialised - start, 3), "open_s": round(opened - serialised, 3)},
                          "apart": {"split_s": round(split - opened, 3), "open_s": round(opened_apart - split, 3),
                                    "graph_bytes": len(apart.graph_bytes),
                                    "weights_bytes": sum(a.nbytes for a in apart.arrays)}}), flush=True)
        del whole, separate, apart
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
