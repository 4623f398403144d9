"""Fuse attention blocks into ONNX Runtime's ``com.microsoft`` MultiHeadAttention.

    Q = Transpose(Reshape(x·Wq + bq)), K = ..., V = ...
    MatMul(Softmax(MatMul(Q, Kᵀ)·s + mask), V) ─Transpose─Reshape─►  y
        ==>  y = MultiHeadAttention(x·Wq, x·Wk, x·Wv, bias=[bq;bk;bv], attention_bias=mask, scale=s)

The matching is onnxscript's ORT fusions, in their order: SDPA (the softmax(QKᵀ·s + mask)·V
core, in the eager matmul form and the scaled-both-sides form the exporter writes for
``scaled_dot_product_attention``), then the head split / merge around it (MHA) and the
projection biases (MHA bias). Shape inference runs first because the head-split checks need
shapes. Counts are of fused ops present after the pass.

Dynamic sizes: the rules bind batch and sequence length as symbols and take ``num_heads`` from
the head-split's static head dimension only (a symbolic one makes the MHA rule refuse), so a
fused op holds no size of the example; the (B·S, D) view put back below is ``(-1, D)``.

The Q/K/V projections stay MatMuls: ORT packs their weights once and runs them as whole-matrix
GEMMs. Packing them into the Attention op as well is ``pack_qkv_attention``, a separate pass,
because ORT's CPU Attention kernel runs the projection head by head and measured slower.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.optimizer import optimize
from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, count_ops

ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def count_softmax_blocks(model: ir.Model) -> int:
    """Attention blocks still written out: a Softmax whose output feeds a MatMul."""
    return sum(
        1 for node in model.graph.all_nodes()
        if node.op_type == "Softmax" and any(u.op_type in ("MatMul", "Where") for u, _ in node.outputs[0].uses())
    )


def restore_flattened_outputs(model: ir.Model) -> int:
    """Put back a (B·S, D) view where the fused op replaced one and now yields (B, S, D).

    GPT-2's Conv1D merges heads straight into a 2-D (B·S, D) view for its Gemm; the MHA rule
    takes that view's place with the 3-D MHA output, which Gemm rejects. A Reshape to (-1, D)
    restores what the consumers saw.
    """
    restored = 0
    for node in list(model.graph):
        if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft":
            continue
        out = node.outputs[0]
        if out.shape is None or len(out.shape) != 2 or not isinstance(out.shape[1], int):
            continue
        if out.is_graph_output():
            continue
        uses = list(out.uses())
        width = out.shape[1]
        out.shape = None  # the MHA output is (B, S, D); let ORT infer it
        shape = ir.Value(name=f"{out.name}_flat_shape", const_value=ir.tensor(np.array([-1, width], dtype=np.int64)))
        model.graph.register_initializer(shape)
        reshape = ir.Node("", "Reshape", [out, shape], name=f"{node.name}_flatten")
        reshape.outputs[0].name = f"{out.name}_flat"
        for user, index in uses:
            user.replace_input_with(index, reshape.outputs[0])
        model.graph.insert_after(node, reshape)
        restored += 1
    return restored


class FuseAttention(OnnxPass):
    """Attention (softmax(QKᵀ·s + mask)·V with head split/merge) ==> com.microsoft MultiHeadAttention."""

    name = "fuse_attention"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        before = count_softmax_blocks(model)
        if before == 0:
            return PassResult(False, {"attention_present": 0, "fused": 0})
        common_passes.ShapeInferencePass()(model)
        optimize(model)
        sdpa = fuse_sdpa(model, apply_shape_inference=True)
        mha = fuse_mha1(model) + fuse_mha2(model)
        restore_flattened_outputs(model)
        if mha:
            fuse_mha_scale(model)
            fuse_mha_bias(model)
        optimize(model)  # inlines any SDPA function left unfused, drops dead nodes
        fused = count_ops(model, *ATTENTION_OPS)
        left = count_softmax_blocks(model)
        if left:
            ctx.refuse("graph", f"{left} of {before} attention blocks kept their softmax form (SDPA matched {sdpa}, MHA {mha})")
        return PassResult(fused > 0, {"attention_present": before, "fused": fused})
