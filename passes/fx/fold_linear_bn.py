"""Fold an inference-mode BatchNorm1d into the linear layer that feeds it.

    batch_norm(linear(x, W, b), γ, β, μ, σ², ε)  ==>  linear(x, W', b')

    s  = γ / √(σ² + ε)                       (one scale per output feature)
    W' = diag(s) · W       (W is [out, in]: row o is scaled by s[o])
    b' = (b − μ) · s + β                      (b = 0 when the linear has no bias)

BatchNorm1d normalises dim 1. Only a 2-D linear output ``[N, out]`` has its features on dim 1;
for ``[N, L, out]`` the BN would normalise over ``L`` and the fold would be wrong, so the pass
refuses it. Arithmetic in float64, cast back to the weight's dtype.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import (BATCH_NORM_OPS, add_constant, aten, batch_norm_affine, find_nodes, get_constant, is_op,
                             tensor_meta)


class FoldLinearBatchNorm(Pass):
    """Fold eval-mode BatchNorm1d into the preceding linear layer's weight and bias."""

    name = "fold_linear_bn"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        folded = 0
        for bn in find_nodes(gm, *BATCH_NORM_OPS):
            linear = bn.args[0]
            if is_op(linear, aten.linear) and self._fold(gm, ctx, linear, bn):
                folded += 1
        return PassResult(modified=folded > 0, stats={"folded": folded})

    def _fold(self, gm, ctx: PassContext, linear: torch.fx.Node, bn: torch.fx.Node) -> bool:
        if len(linear.users) != 1:
            ctx.refuse(bn, f"linear output has {len(linear.users)} users")
            return False
        out = tensor_meta(linear)
        if out is None or out.dim() != 2:
            ctx.refuse(bn, "linear output is not 2-D, so batch_norm's channel axis is not the feature axis")
            return False
        affine, reason = batch_norm_affine(gm, bn)
        if affine is None:
            ctx.refuse(bn, reason)
            return False
        scale, shift, redirect = affine
        weight = get_constant(gm, linear.args[1])
        bias_node = linear.args[2] if len(linear.args) > 2 else linear.kwargs.get("bias")
        bias = get_constant(gm, bias_node) if bias_node is not None else None
        if weight is None or (bias_node is not None and bias is None) or not weight.is_floating_point():
            ctx.refuse(bn, "linear weight or bias is not a floating-point constant")
            return False
        if scale.numel() != weight.shape[0]:
            ctx.refuse(bn, f"batch_norm has {scale.numel()} channels, the linear {weight.shape[0]} outputs")
            return False

        new_weight = (weight.double() * scale[:, None]).to(weight.dtype)
        new_bias = shift if bias is None else bias.double() * scale + shift
        weight_node = add_constant(gm, new_weight, f"{linear.name}_folded_weight", before=linear)
        bias_out = add_constant(gm, new_bias.to(weight.dtype), f"{linear.name}_folded_bias", before=linear)
        linear.args = (linear.args[0], weight_node, bias_out)
        linear.kwargs = {}
        redirect.replace_all_uses_with(linear)
        if redirect is not bn:
            gm.graph.erase_node(redirect)
        gm.graph.erase_node(bn)
        return True
