"""Remove redundant casts and shape ops: what exporters and other rewrites leave behind.

    Cast(Cast(x, T₁), T₂)      ==>  Cast(x, T₂)         (when T₁ loses nothing T₂ keeps)
    Cast(x, dtype(x))          ==>  x
    Reshape(Reshape(x, s₁), s₂) ==> Reshape(x, s₂)
    Transpose(Transpose(x, p), q) ==> Transpose(x, p∘q)  (dropped when the identity)
    Expand(x, shape(x)), Unsqueeze(Unsqueeze(x)), Flatten ==> the single op or nothing

The float16 conversion fences every kept-fp32 op with Casts, so back-to-back Casts appear
between neighbouring fenced ops; the TorchScript exporter adds its own. Each is a kernel launch
and a copy of the tensor. Rules: onnxscript's common rewrite rules, applied to a fixed point.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.pattern import RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    cast_cast_rule,
    flatten_to_reshape_rule,
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    reshape_reshape_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, count_ops

# flatten_to_reshape before reshape_reshape, so a Flatten next to a Reshape merges with it.
SHAPE_OPS = ("Reshape", "Transpose", "Expand", "Unsqueeze", "Flatten")
RULES = RewriteRuleSet([
    cast_cast_rule, no_op_cast_rule, no_op_expand_rule, flatten_to_reshape_rule, reshape_reshape_rule,
    no_op_transpose_rule, transpose_transpose_rule, unsqueeze_unsqueeze_rule,
])


class CleanupCastsReshapes(OnnxPass):
    """Cast∘Cast, no-op Cast, Reshape∘Reshape, Transpose∘Transpose, … ==> one op or none."""

    name = "cleanup_casts_reshapes"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        casts_before = count_ops(model, "Cast")
        shapes_before = count_ops(model, *SHAPE_OPS)
        rewrites = 0
        for _ in range(10):  # one rewrite can expose the next (three Reshapes in a row)
            applied = RULES.apply_to_model(model)
            rewrites += applied
            if not applied:
                break
        stats = {"casts_removed": casts_before - count_ops(model, "Cast"),
                 "shape_ops_removed": shapes_before - count_ops(model, *SHAPE_OPS),
                 "rewrites": rewrites}
        return PassResult(rewrites > 0, stats)
