"""Fold a bias Add after a MatMul into a ``Gemm`` (2-D) between two Reshapes (3-D and up).

    y = MatMul(x, W) + b                     x: (…, K), W: (K, N) constant, b: (N,) constant
        ==>  y = Gemm(x, W, b)                                            when x is 2-D
        ==>  y = Reshape(Gemm(Reshape(x, (-1, K)), W, b), (…, N))         otherwise

The exporter writes ``linear`` on a 3-D activation as MatMul + Add: two kernels and the
activation written out and read back once more. Gemm adds the bias inside the GEMM's output
loop. The output shape is a constant with one -1 when at most one leading dimension is symbolic
(the batch alone), otherwise ``Concat(Shape(x)[:-1], [N])``, read at run time (batch and
sequence length both dynamic): no size that can vary is written into the graph. Rules:
onnxscript's pattern rewriter.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, bias_length


class MatMulBiasToGemm(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, weight, bias):
        return op.Add(op.MatMul(x, weight), bias)

    def check(self, context, x, weight, bias, **_):
        result = pattern.MatchResult()
        if weight.const_value is None or len(weight.const_value.shape) != 2:
            return result.fail("the weight is not a 2-D constant")
        if bias_length(bias) != weight.const_value.shape[1]:
            return result.fail("the addend is not a bias over the output features")
        if x.shape is None or len(x.shape) < 2 or x.dtype != ir.DataType.FLOAT:
            return result.fail("the input's rank is unknown, below 2, or not float32")
        return result

    def rewrite(self, op, x, weight, bias):
        features = weight.const_value.shape[1]
        flat_bias = op.initializer(ir.tensor(bias.const_value.numpy().reshape(-1)), name=f"{bias.name}_flat")
        if len(x.shape) == 2:
            return op.Gemm(x, weight, flat_bias)
        rows = op.Reshape(x, op.Constant(value=ir.tensor(np.array([-1, weight.const_value.shape[0]], dtype=np.int64))))
        gemm = op.Gemm(rows, weight, flat_bias)
        leading = list(x.shape)[:-1]
        unknown = [i for i, d in enumerate(leading) if not isinstance(d, int)]
        if len(unknown) <= 1:
            dims = [-1 if not isinstance(d, int) else d for d in leading] + [features]
            shape = op.Constant(value=ir.tensor(np.array(dims, dtype=np.int64)))
        else:
            shape = op.Concat(op.Shape(x, start=0, end=-1),
                              op.Constant(value=ir.tensor(np.array([features], dtype=np.int64))), axis=0)
        return op.Reshape(gemm, shape)


RULES = pattern.RewriteRuleSet([MatMulBiasToGemm.rule()], commute=True)


class FoldBiasAdd(OnnxPass):
    """MatMul(x, W) + b ==> Gemm(x, W, b) (with Reshapes around it for 3-D x)."""

    name = "fold_bias_add"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        folded = RULES.apply_to_model(model)
        return PassResult(folded > 0, {"folded": folded})
