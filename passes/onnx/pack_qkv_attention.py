"""Pack the Q, K and V projections of a MultiHeadAttention into ``com.microsoft`` Attention.

    MultiHeadAttention(x·Wq, x·Wk, x·Wv, bias=[bq;bk;bv], mask)
        ==>  Attention(x, [Wq|Wk|Wv], [bq;bk;bv], mask)

One op reads x once and runs all three projections and the attention core; on CUDA that is one
GEMM of three times the width and fewer launches. It needs the three projections to share their
input (self-attention). Not in the CPU pipeline: ORT's CPU Attention kernel splits the packed
projection head by head, which measured slower than three whole-matrix MatMuls on BERT-base.
Rules: onnxscript's ORT attention fusion; runs after ``fuse_attention``.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions.attention import fuse_attention

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult


class PackQkvAttention(OnnxPass):
    """MultiHeadAttention on three projections of one input ==> com.microsoft Attention."""

    name = "pack_qkv_attention"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if not any(node.op_type == "MultiHeadAttention" for node in model.graph.all_nodes()):
            return PassResult(False, {"packed": 0})
        packed = fuse_attention(model)
        return PassResult(packed > 0, {"packed": packed})
