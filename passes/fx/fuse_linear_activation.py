"""Fuse a linear layer's bias and ReLU/GELU into one ``_addmm_activation`` call.

    relu(linear(x, W, b))          ==> _addmm_activation(b, x2d, Wᵀ).view(*lead, out)
    gelu(linear(x, W, b))          ==> _addmm_activation(b, x2d, Wᵀ, use_gelu=True).view(...)   (CPU only)
    relu(addmm(b, x, M))           ==> _addmm_activation(b, x, M)

    x2d = x.reshape(-1, in)        (linear accepts any leading dims; addmm wants a matrix)

``_addmm_activation(b, x, M) = act(b + x @ M)`` computes the GEMM with the bias folded in and
applies the activation on the result in place, so the activation does not allocate a second
output. With ``use_gelu`` the CPU kernel applies the exact (erf) GELU, identical to
``gelu(approximate="none")``; the CUDA kernel uses the tanh approximation instead, so GELU is
fused only on CPU and only the exact form (``approximate="tanh"`` is left alone everywhere).
Linears without bias are left alone (the fused op needs a bias).

Symbolic shapes: ``in`` and ``out`` come from the constant weight, so only the leading sizes can
be symbolic. ``x2d`` needs none of them (``-1``), and the view back takes each from ``x`` at run
time: ``-1`` for the first symbolic one, ``sym_size(x, d)`` for any other, so the rewrite holds at
every batch and sequence length.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, find_nodes, infer_meta, is_op, is_static, only_user, sym_size_node, tensor_meta

_RELU = (aten.relu, aten.relu_)


def _activation(node: torch.fx.Node, ctx: PassContext) -> bool | None:
    """``use_gelu`` for a fusable activation node, or None when it is not one."""
    if is_op(node, *_RELU):
        return False
    if is_op(node, aten.gelu):
        approximate = node.args[1] if len(node.args) > 1 else node.kwargs.get("approximate", "none")
        if approximate == "none" and ctx.device.type == "cpu":
            return True
    return None


class FuseLinearActivation(Pass):
    """linear/addmm + bias + ReLU/GELU to the single aten._addmm_activation call."""

    name = "fuse_linear_activation"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        fused = 0
        for gemm in find_nodes(gm, aten.linear, aten.addmm):
            act = only_user(gemm)
            use_gelu = _activation(act, ctx) if act is not None else None
            if use_gelu is None:
                continue
            out = tensor_meta(gemm)
            if out is None or not out.is_floating_point():
                ctx.refuse(act, "linear output has no recorded floating-point type")
                continue
            if not is_static(out.shape[-1]):
                ctx.refuse(act, "the linear's output feature size is symbolic")
                continue
            replacement = self._rewrite(gm, ctx, gemm, act, use_gelu, out)
            if replacement is None:
                continue
            act.replace_all_uses_with(replacement)
            gm.graph.erase_node(act)
            gm.graph.erase_node(gemm)
            fused += 1
        return PassResult(modified=fused > 0, stats={"fused": fused})

    @staticmethod
    def _rewrite(gm, ctx: PassContext, gemm: torch.fx.Node, act: torch.fx.Node, use_gelu: bool, out):
        kwargs = {"use_gelu": True} if use_gelu else {}
        graph = gm.graph
        if is_op(gemm, aten.addmm):
            if gemm.kwargs:  # beta/alpha other than 1
                ctx.refuse(act, "addmm has beta/alpha")
                return None
            with graph.inserting_before(act):
                node = graph.call_function(aten._addmm_activation.default, tuple(gemm.args), kwargs)
            node.meta["val"] = out
            return node
        x, weight = gemm.args[0], gemm.args[1]
        bias = gemm.args[2] if len(gemm.args) > 2 else gemm.kwargs.get("bias")
        bias_meta, x_meta = tensor_meta(bias), tensor_meta(x)
        if bias is None or bias_meta is None or bias_meta.dim() != 1 or x_meta is None:
            ctx.refuse(act, "linear has no 1-D bias")
            return None
        if not is_static(x_meta.shape[-1]):
            ctx.refuse(act, "the linear's input feature size is symbolic")
            return None
        with graph.inserting_before(act):
            flat = x
            if x_meta.dim() != 2:
                flat = graph.call_function(aten.reshape.default, (x, [-1, int(x_meta.shape[-1])]))
                infer_meta(flat)
            weight_t = graph.call_function(aten.t.default, (weight,))
            infer_meta(weight_t)
            node = graph.call_function(aten._addmm_activation.default, (bias, flat, weight_t), kwargs)
            if out.dim() != 2:
                infer_meta(node)
                node = graph.call_function(aten.view.default, (node, _lead_shape(graph, x, x_meta) + [int(out.shape[-1])]))
        node.meta["val"] = out
        return node


def _lead_shape(graph, x: torch.fx.Node, x_meta) -> list:
    """``x``'s sizes but the last as a view argument: ints where static, ``-1`` for the first
    symbolic size, ``sym_size(x, d)`` nodes for the others."""
    lead = x_meta.shape[:-1]
    shape, free = [], not any(is_static(size) and int(size) == 0 for size in lead)  # -1 is ambiguous in 0 elements
    for d in range(len(lead)):
        if is_static(x_meta.shape[d]):
            shape.append(int(x_meta.shape[d]))
        elif free:
            shape.append(-1)
            free = False
        else:
            shape.append(sym_size_node(graph, x, d))
    return shape
