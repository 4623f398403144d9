"""Finding the fused attention nodes ONNX passes rewrite: part of the public ONNX pass API."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def hiding_bias(dtype) -> float:
    """An attention bias at or below this hides its key: softmax gives it weight exactly 0.
    Half the dtype's minimum takes in -inf and the minimum itself (what transformers writes)."""
    return float(np.finfo(dtype).min) / 2


def masked_attention(model: ir.Model) -> list[ir.Node]:
    """The ``com.microsoft`` MultiHeadAttention nodes of ``model``'s main graph that carry an
    ``attention_bias`` (input 5), in graph order. Without one ORT already runs its flash kernel."""
    return [node for node in model.graph
            if node.op_type == "MultiHeadAttention" and node.domain == "com.microsoft"
            and len(node.inputs) > 5 and node.inputs[5] is not None]


def plain_self_attention_blocker(node: ir.Node) -> str | None:
    """Why a masked MultiHeadAttention is more than q, k, v (+ bias) and a mask, or None: a key
    padding mask or past key/value, used present key/value, Q/K/V not (batch, seq, hidden), or an
    output that is a graph output."""
    inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
    if inputs[4] is not None or inputs[6] is not None or inputs[7] is not None:
        return "it has a key padding mask or past key/value"
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return "its present key/value are used"
    if any(v is None or v.shape is None or len(v.shape) != 3 for v in inputs[:3]):
        return "its query/key/value are not (batch, seq, hidden)"
    if node.outputs[0].is_graph_output():
        return "its output is a graph output"
    return None


__all__ = ["hiding_bias", "masked_attention", "plain_self_attention_blocker"]
