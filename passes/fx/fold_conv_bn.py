"""Fold an inference-mode BatchNorm into the convolution that feeds it.

    batch_norm(conv(x, W, b), γ, β, μ, σ², ε)  ==>  conv(x, W', b')

    s  = γ / √(σ² + ε)                       (one scale per output channel)
    W' = W · s      (broadcast over the output-channel axis, dim 0)
    b' = (b − μ) · s + β                      (b = 0 when the conv has no bias)

BatchNorm in eval mode is ``y = (z − μ)·s + β`` per channel; with ``z = W*x + b`` that is
``(W·s)*x + (b − μ)·s + β``. Grouped and depthwise convolutions keep one weight slice per output
channel along dim 0, so the same scaling applies. The new weights are computed in float64 and
cast back, so the fold adds no more than one rounding per weight.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import add_constant, aten, find_nodes, get_constant, is_op

_CONVS = (aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution)
_BATCH_NORMS = (aten.batch_norm, aten._native_batch_norm_legit_no_training)


def _bn_operands(bn: torch.fx.Node):
    """(weight, bias, running_mean, running_var, eps) nodes/values of a BN call, or None in training mode."""
    args = list(bn.args)
    if is_op(bn, aten.batch_norm):
        # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
        training = args[5] if len(args) > 5 else bn.kwargs.get("training")
        if training:
            return None
        return args[1], args[2], args[3], args[4], args[7] if len(args) > 7 else bn.kwargs.get("eps", 1e-5)
    # _native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps)
    return args[1], args[2], args[3], args[4], args[6] if len(args) > 6 else bn.kwargs.get("eps", 1e-5)


def _bn_output_users(bn: torch.fx.Node):
    """The node whose users should be redirected to the conv (the getitem 0 for tuple-returning BNs)."""
    if is_op(bn, aten.batch_norm):
        return bn
    getitems = [u for u in bn.users if u.target.__name__ == "getitem"] if all(u.op == "call_function" for u in bn.users) else []
    if len(getitems) != len(bn.users) or any(u.args[1] != 0 for u in getitems) or len(getitems) != 1:
        return None
    return getitems[0]


class FoldConvBatchNorm(Pass):
    """Fold eval-mode BatchNorm into the preceding convolution's weight and bias."""

    name = "fold_conv_bn"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        folded = 0
        for bn in find_nodes(gm, *_BATCH_NORMS):
            conv = bn.args[0]
            if not is_op(conv, *_CONVS):
                continue
            if self._fold(gm, ctx, conv, bn):
                folded += 1
        return PassResult(modified=folded > 0, stats={"folded": folded})

    def _fold(self, gm, ctx: PassContext, conv: torch.fx.Node, bn: torch.fx.Node) -> bool:
        if len(conv.users) != 1:
            ctx.refuse(bn, f"conv output has {len(conv.users)} users")
            return False
        if is_op(conv, aten.convolution) and conv.args[6]:
            ctx.refuse(bn, "transposed convolution (weight layout differs)")
            return False
        operands = _bn_operands(bn)
        if operands is None:
            ctx.refuse(bn, "batch_norm runs in training mode")
            return False
        redirect = _bn_output_users(bn)
        if redirect is None:
            ctx.refuse(bn, "batch_norm's mean/var outputs are used")
            return False
        gamma_n, beta_n, mean_n, var_n, eps = operands
        weight = get_constant(gm, conv.args[1])
        bias_node = conv.args[2] if len(conv.args) > 2 else conv.kwargs.get("bias")
        bias = get_constant(gm, bias_node) if bias_node is not None else None
        mean, var = get_constant(gm, mean_n), get_constant(gm, var_n)
        gamma = get_constant(gm, gamma_n) if gamma_n is not None else None
        beta = get_constant(gm, beta_n) if beta_n is not None else None
        if weight is None or mean is None or var is None or (bias_node is not None and bias is None) \
                or (gamma_n is not None and gamma is None) or (beta_n is not None and beta is None):
            ctx.refuse(bn, "conv weight or batch_norm statistics are not constants")
            return False

        new_weight, new_bias = fold_weights(weight, bias, gamma, beta, mean, var, float(eps))
        weight_node = add_constant(gm, new_weight, f"{conv.name}_folded_weight", before=conv)
        bias_out = add_constant(gm, new_bias, f"{conv.name}_folded_bias", before=conv)
        args = list(conv.args)
        args[1] = weight_node
        if len(args) > 2:
            args[2] = bias_out
        else:
            args.append(bias_out)
        conv.args = tuple(args)
        conv.kwargs = {k: v for k, v in conv.kwargs.items() if k != "bias"}
        redirect.replace_all_uses_with(conv)
        if redirect is not bn:
            gm.graph.erase_node(redirect)
        gm.graph.erase_node(bn)
        return True


def fold_weights(weight, bias, gamma, beta, mean, var, eps: float):
    """The folded (W', b') for a conv weight with the output channel on dim 0."""
    w = weight.double()
    scale = torch.rsqrt(var.double() + eps)
    if gamma is not None:
        scale = scale * gamma.double()
    shift = -mean.double() * scale
    if bias is not None:
        shift = shift + bias.double() * scale
    if beta is not None:
        shift = shift + beta.double()
    new_weight = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    return new_weight.to(weight.dtype), shift.to(weight.dtype)
