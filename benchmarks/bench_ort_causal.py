"""Causal self-attention on ORT's CPU kernels: every way of asking for it, one GPT-2 layer's size.

    python benchmarks/bench_ort_causal.py [--seq 512]

12 heads of 64, batch 1, 2 threads. Each case is one small model fed the same q, k, v; its
output is checked against a numpy reference, and all are timed in interleaved turns
(``accelc.timing.compare_latency``); medians in ms:

- ``MHA + causal bias``: one ``MultiHeadAttention`` with the (1, 1, S, S) mask as
  ``attention_bias`` (what ``fuse_attention`` makes of GPT-2's attention);
- ``MHA unidirectional=1``, ``ONNX Attention is_causal=1`` (opset 23),
  ``GroupQueryAttention`` (causal by definition): the kernels that know the mask is causal;
- ``split_causal_attention``: the first case after accelc's pass (query chunks of 128 rows,
  k and v heads-first), and the same with k and v left sequence-first (the pass's layout when
  the MHA has a projection bias; a zero one here);
- ``MHA without mask (not causal)``: the flash kernel on the full square, the speed a causal
  flash kernel would beat. It computes a different function, so its error is not checked.

ORT 1.31's CPU MultiHeadAttention takes its flash path only with no mask and unidirectional=0;
every causal option above runs a kernel that materialises the scores.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper

from accelc.pass_base import PassContext
from accelc.registry import Registry
from accelc.timing import compare_latency

HIDDEN, HEADS = 768, 12


def reference(q, k, v, seq: int) -> np.ndarray:
    heads = [x.reshape(1, seq, HEADS, -1).transpose(0, 2, 1, 3) for x in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(0, 1, 3, 2) / np.sqrt(HIDDEN // HEADS)
    scores += np.triu(np.full((seq, seq), -np.inf, np.float32), 1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ heads[2]).transpose(0, 2, 1, 3).reshape(1, seq, HIDDEN)


def model(node, seq: int, opset: int, extra_inputs=(), initializers=()):
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, seq, HIDDEN]) for n in "qkv"] + list(extra_inputs)
    node.output[0] = "attention"  # as inside a model: the pass leaves an attention that is a graph output alone
    graph = helper.make_graph([node, helper.make_node("Identity", ["attention"], ["y"])], "causal", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              list(initializers))
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


def cases(seq: int) -> dict:
    """name -> (ONNX model, extra feeds)."""
    mask = np.triu(np.full((seq, seq), np.finfo(np.float32).min, np.float32), 1)[None, None]
    masked = model(helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "mask"], ["y"], domain="com.microsoft",
                                    num_heads=HEADS), seq, 20, initializers=[helper.make_tensor(
                                        "mask", TensorProto.FLOAT, mask.shape, mask.ravel())])
    # With a projection bias (here zero) the pass leaves k and v sequence-first: each chunk's
    # MHA then transposes its own key range, as the pass did before it went heads-first.
    zero_bias = helper.make_tensor("zero_bias", TensorProto.FLOAT, [3 * HIDDEN], np.zeros(3 * HIDDEN, np.float32))
    with_bias = model(helper.make_node("MultiHeadAttention", ["q", "k", "v", "zero_bias", "", "mask"], ["y"],
                                       domain="com.microsoft", num_heads=HEADS), seq, 20,
                      initializers=[masked.graph.initializer[0], zero_bias])
    split, split_with_bias = ir.serde.deserialize_model(masked), ir.serde.deserialize_model(with_bias)
    splitter = Registry.discover().create("onnx", "split_causal_attention")
    result = splitter(split, PassContext(current_pass="split_causal_attention", stage="onnx"))
    splitter(split_with_bias, PassContext(current_pass="split_causal_attention", stage="onnx"))
    lengths = [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
               helper.make_tensor_value_info("total", TensorProto.INT32, [])]
    gqa_feeds = {"seqlens_k": np.array([seq - 1], np.int32), "total": np.array(seq, np.int32)}
    out = {
        "MHA + causal bias": (masked, {}),
        "MHA unidirectional=1": (model(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                                                        num_heads=HEADS, unidirectional=1), seq, 20), {}),
        "ONNX Attention is_causal=1": (model(helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1,
                                                              q_num_heads=HEADS, kv_num_heads=HEADS), seq, 23), {}),
        "GroupQueryAttention": (model(helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"],
                                                       ["y", "present_k", "present_v"], domain="com.microsoft",
                                                       num_heads=HEADS, kv_num_heads=HEADS), seq, 20, lengths), gqa_feeds),
        "MHA without mask (not causal)": (model(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"],
                                                                 domain="com.microsoft", num_heads=HEADS), seq, 20), {}),
    }
    if result.modified:
        out["split_causal_attention"] = (ir.serde.serialize_model(split), {})
        out["split_causal_attention, k and v sequence-first"] = (ir.serde.serialize_model(split_with_bias), {})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=30.0, help="timing budget for all kernels together")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, args.seq, HIDDEN), dtype=np.float32) for _ in range(3))
    expected = reference(q, k, v, args.seq)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    runs, errors, failures = {}, {}, {}
    for name, (onnx_model, extra) in cases(args.seq).items():
        try:
            session = ort.InferenceSession(onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            feeds = {"q": q, "k": k, "v": v, **extra}
            errors[name] = float(np.abs(session.run(["y"], feeds)[0] - expected).max())
        except Exception as exc:  # an ORT build without the kernel: say so and go on
            failures[name] = str(exc).splitlines()[0][:120]
            continue
        runs[name] = lambda session=session, feeds=feeds: session.run(["y"], feeds)
    timings = compare_latency(runs, [()], seconds=args.seconds)  # interleaved turns, like the model benchmarks
    print(f"| kernel (seq {args.seq}) | median ms | max error |")
    print("|---|---|---|")
    for name in runs:
        shown = "–" if "not causal" in name else f"{errors[name]:.1e}"
        print(f"| {name} | {timings[name].median_ms:.2f} | {shown} |")
    for name, why in failures.items():
        print(f"| {name} | failed: {why} | – |")

if __name__ == "__main__":
    main()
