"""Which MatMuls to keep in fp32 so that an int8 model stays within an error budget.

quantize_int8's helper (not a pass). Dynamic int8 quantisation of one MatMul y = x·W computes

    ŷ = deq(q_u8(x)) · deq(q_i8(W))     x: one scale and zero point per call, W: one scale per column

and its own relative error e = max|ŷ − y| / max|y| is measured here on the layer's real input x
(the fp32 model run on the example in ONNX Runtime, every candidate's x exposed as an output),
without building a model per layer, quantised as quantize_int8 quantises it
(:func:`quantise_columns`, :func:`quantise_activation`). Layers whose input has outliers (the FFN's second linear
after GELU) have the largest e. A layer with no normalisation between it and a model output (a
pooler, a classifier, an LM head) passes its error to the output undamped, so those come first
(the usual "keep the last layer in higher precision"), then the rest by e. When the whole int8
model's error on the example, max|int8 − fp32| / max|fp32| over its outputs, is above the budget,
the first 1, 2, 4, … layers of that order are kept in fp32 until it is within; more than half
kept is not worth it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ROWS = 256  # rows of x a layer's error is measured on (a seeded sample: an LM head's x·W is large)


def candidates(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The top graph's MatMul/Gemm nodes with a constant 2-D weight, as the quantiser takes them."""
    weights = {t.name for t in proto.graph.initializer if len(t.dims) == 2}
    return [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and n.domain in ("", "ai.onnx")
            and len(n.input) > 1 and n.input[1] in weights
            and not any(a.name == "transA" and a.i for a in n.attribute)]


# Ops that rescale what flows through them: an error before one reaches the output damped.
NORMALISING = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
               "SkipSimplifiedLayerNormalization", "Softmax", "BatchNormalization", "GroupNormalization"}


def output_layers(proto: onnx.ModelProto) -> set[str]:
    """Candidate layers (by node name) that reach a model output through no normalisation."""
    names = {n.name for n in candidates(proto)}
    producer = {out: node for node in proto.graph.node for out in node.output}
    found, seen = set(), set()
    stack = [o.name for o in proto.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.name in names:
            found.add(node.name)
        elif node.op_type not in NORMALISING:
            stack.extend(node.input)
    return found


def ranked(proto: onnx.ModelProto, errors: dict[str, float]) -> list[str]:
    """The order layers are kept in fp32: those reaching an output undamped, then by own error."""
    direct = output_layers(proto)
    return sorted(errors, key=lambda name: (name not in direct, -errors[name]))


def feeds_for(proto: onnx.ModelProto, example_inputs: tuple) -> dict | None:
    """The example inputs by ONNX input name, when the model takes them one for one (the dynamo
    export keeps forward()'s arguments in order); None when it dropped or added some."""
    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(names) != len(example_inputs) or not all(hasattr(x, "numpy") for x in example_inputs):
        return None
    return {name: x.detach().cpu().numpy() for name, x in zip(names, example_inputs)}


def weight_qmax(weight_bits: int) -> int:
    """The largest |W_q| of int8 weights with ``weight_bits`` bits: 127 at 8 bits; 64 at 7 (the
    range ONNX Runtime's own quantiser gives ``reduce_range``: a uint8×int8 pair sums to at most
    2·255·64 < 2¹⁵, so the int16 pair sums of a CPU without VNNI cannot saturate)."""
    return 127 if weight_bits == 8 else 64


def quantise_columns(w: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(W_q int8, s_W float32) with W ≈ s_W·W_q, symmetric, one scale per column:
    s_W[n] = max_k |W[k, n]| / qmax, W_q = round(W / s_W) (a zero column gets the scale 1)."""
    scale = (np.abs(w).max(axis=0) / qmax).astype(np.float32)
    scale[scale == 0] = 1.0
    return np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8), scale


def quantise_activation(x: np.ndarray) -> np.ndarray:
    """deq(q_u8(x)): x as DynamicQuantizeMatMul sees it, uint8 over its range with 0 included."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.round(-low / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def run(model: str | bytes, feeds: dict, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """``model`` (a path or serialised bytes) on ``feeds`` in a CPU session at ORT's basic level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def relative_error(got: dict, reference: dict) -> float:
    """The worst float output's max|got − reference| / max|reference| (accelc's relative error)."""
    worst = 0.0
    for name, ref in reference.items():
        if not np.issubdtype(ref.dtype, np.floating) or ref.size == 0:
            continue
        scale = max(float(np.abs(ref).max()), 1e-12)
        worst = max(worst, float(np.abs(got[name].astype(np.float64) - ref).max()) / scale)
    return worst


def layer_errors(proto: onnx.ModelProto, feeds: dict, weight_bits: int, names: set[str]) -> dict[str, float]:
    """The own int8 error (by node name) of each candidate node named in ``names`` (the layers
    quantize_int8 takes) on its real input at the example."""
    nodes = [node for node in candidates(proto) if node.name in names]
    inputs = {i.name for i in proto.graph.input}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    known = {o.name for o in exposed.graph.output}
    for name in dict.fromkeys(n.input[0] for n in nodes):
        if name not in inputs and name not in known:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    wanted = [o.name for o in exposed.graph.output]
    values = run(exposed.SerializeToString(), feeds, wanted) | {k: v for k, v in feeds.items()}
    weights = {t.name: t for t in proto.graph.initializer}
    rng = np.random.default_rng(0)
    errors = {}
    for node in nodes:
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            w = w.T
        x = values[node.input[0]].astype(np.float32).reshape(-1, w.shape[0])
        if len(x) > ROWS:
            x = x[np.sort(rng.choice(len(x), ROWS, replace=False))]
        errors[node.name] = _own_error(x, w, weight_bits)
    return errors


def _own_error(x: np.ndarray, w: np.ndarray, weight_bits: int) -> float:
    """max|deq(q(x))·deq(q(W)) − x·W| / max|x·W|, x and W quantised as quantize_int8 does."""
    w_q, w_scale = quantise_columns(w, weight_qmax(weight_bits))
    exact = x @ w
    approx = quantise_activation(x) @ (w_q.astype(np.float32) * w_scale)
    return float(np.abs(approx - exact).max() / max(float(np.abs(exact).max()), 1e-12))
