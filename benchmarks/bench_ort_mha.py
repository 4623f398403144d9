"""One ORT CPU MultiHeadAttention (12 heads of 64, 2 threads): with a mask vs without one.

    python benchmarks/bench_ort_mha.py

ORT's CPU kernel takes its flash path only without a mask; this is the kernel-level size of what
``drop_padded_keys`` buys. The masked case is the full key length with a (B, 1, S, K) bias, the
unmasked case the keys that remain once the padding is dropped. The two are timed in
interleaved turns (``accelc.timing.compare_latency``); medians in ms.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from accelc.timing import compare_latency

HIDDEN, HEADS = 768, 12
CASES = [  # (batch, queries, keys with the mask, keys without it)
    (1, 128, 128, 120), (8, 128, 128, 120), (1, 197, 197, 197), (8, 197, 197, 197), (1, 512, 512, 480),
]


def session(batch: int, queries: int, keys: int, masked: bool) -> ort.InferenceSession:
    shape = {"q": queries, "k": keys, "v": keys}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, s, HIDDEN]) for n, s in shape.items()]
    names = ["q", "k", "v", "bias"]
    if masked:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, queries, keys]))
        names += ["", "mask"]
    node = helper.make_node("MultiHeadAttention", names, ["y"], domain="com.microsoft", num_heads=HEADS)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3 * HIDDEN], np.zeros(3 * HIDDEN, np.float32))
    graph = helper.make_graph([node], "mha", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [bias])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def feeds(batch: int, queries: int, keys: int, masked: bool) -> dict:
    rng = np.random.default_rng(0)
    out = {n: rng.standard_normal((batch, s, HIDDEN), dtype=np.float32) for n, s in (("q", queries), ("k", keys), ("v", keys))}
    if masked:
        mask = np.zeros((batch, 1, queries, keys), np.float32)
        mask[..., keys - max(1, keys // 16):] = np.finfo(np.float32).min  # padded keys, as BERT writes them
        out["mask"] = mask
    return out


def main() -> None:
    print("| batch | queries | masked: keys, ms | unmasked: keys, ms | ratio |")
    print("|---|---|---|---|---|")
    for batch, queries, keys, kept in CASES:
        runs = {}
        for name, n_keys, masked in (("masked", keys, True), ("flash", kept, False)):
            run, feed = session(batch, queries, n_keys, masked).run, feeds(batch, queries, n_keys, masked)
            runs[name] = lambda run=run, feed=feed: run(None, feed)
        timings = compare_latency(runs, [()], seconds=8)  # the two in interleaved turns
        masked, flash = timings["masked"].median_ms, timings["flash"].median_ms
        print(f"| {batch} | {queries} | {keys}, {masked:.2f} | {kept}, {flash:.2f} | {masked / flash:.2f}× |")

if __name__ == "__main__":
    main()
