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
from accelc.patterns import BATCH_NORM_OPS, aten, find_nodes, fold_batch_norm_into, is_op, tensor_meta


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
        out = tensor_meta(linear)
        if out is None or out.dim() != 2:
            ctx.refuse(bn, "linear output is not 2-D, so batch_norm's channel axis is not the feature axis")
            return False
        return fold_batch_norm_into(gm, ctx, linear, bn, "linear",
                                    scale_weight=lambda w, s: w.double() * s[:, None],  # row o of [out, in] times s[o]
                                    out_channels=lambda w: w.shape[0])
