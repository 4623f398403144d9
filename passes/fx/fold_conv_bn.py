"""Fold an inference-mode BatchNorm into the convolution that feeds it.

    batch_norm(conv(x, W, b), γ, β, μ, σ², ε)  ==>  conv(x, W', b')

    s  = γ / √(σ² + ε)                       (one scale per output channel)
    W' = W · s      (along the weight's output-channel axis)
    b' = (b − μ) · s + β                      (b = 0 when the conv has no bias)

BatchNorm in eval mode is ``y = (z − μ)·s + β`` per channel; with ``z = W*x + b`` that is
``(W·s)*x + (b − μ)·s + β``. Covered: conv1d/2d/3d (with or without bias), grouped and depthwise
convs, whose weight ``[out, in/groups, k...]`` keeps one slice per output channel on dim 0; and
transposed convs, whose weight is ``[in, out/groups, k...]``: output channel ``g·(out/groups) + j``
reads ``W[g·(in/groups) : (g+1)·(in/groups), j]``, so the scale goes along dim 1 per group.
The new weights are computed in float64 and cast back, so the fold adds one rounding per weight.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import BATCH_NORM_OPS, aten, find_nodes, fold_batch_norm_into, is_op

_CONVS = (aten.conv1d, aten.conv2d, aten.conv3d)
_TRANSPOSED_CONVS = (aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d)


def _conv_layout(conv: torch.fx.Node):
    """(transposed, groups) of a conv call, or None when the node is no conv this pass knows."""
    args = conv.args
    if is_op(conv, *_CONVS):
        # conv2d(input, weight, bias, stride, padding, dilation, groups)
        return False, args[6] if len(args) > 6 else conv.kwargs.get("groups", 1)
    if is_op(conv, *_TRANSPOSED_CONVS):
        # conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        return True, args[6] if len(args) > 6 else conv.kwargs.get("groups", 1)
    if is_op(conv, aten.convolution):
        # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        return bool(args[6]), args[8]
    return None


class FoldConvBatchNorm(Pass):
    """Fold eval-mode BatchNorm into the preceding (transposed) convolution's weight and bias."""

    name = "fold_conv_bn"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        folded = 0
        for bn in find_nodes(gm, *BATCH_NORM_OPS):
            conv = bn.args[0]
            layout = _conv_layout(conv) if isinstance(conv, torch.fx.Node) else None
            if layout is None:
                continue
            if self._fold(gm, ctx, conv, bn, *layout):
                folded += 1
        return PassResult(modified=folded > 0, stats={"folded": folded})

    def _fold(self, gm, ctx: PassContext, conv: torch.fx.Node, bn: torch.fx.Node, transposed: bool, groups: int) -> bool:
        return fold_batch_norm_into(
            gm, ctx, conv, bn, "conv",
            scale_weight=lambda w, s: scale_output_channels(w, s, transposed, groups),
            out_channels=lambda w: w.shape[1] * groups if transposed else w.shape[0])


def scale_output_channels(weight: torch.Tensor, scale: torch.Tensor, transposed: bool = False, groups: int = 1) -> torch.Tensor:
    """``weight`` with each output channel's slice multiplied by ``scale[channel]`` (float64)."""
    w = weight.double()
    tail = [1] * (w.dim() - 2)
    if not transposed:
        scaled = w * scale.reshape(-1, 1, *tail)
    else:
        in_channels, out_per_group = w.shape[0], w.shape[1]
        grouped = w.reshape(groups, in_channels // groups, out_per_group, *w.shape[2:])
        scaled = (grouped * scale.reshape(groups, 1, out_per_group, *tail)).reshape(w.shape)
    return scaled

