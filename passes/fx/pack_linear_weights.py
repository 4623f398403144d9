"""Run fp32 linears as MKL GEMMs on weights packed once, at load (CPU).

    linear(x, W, b)           ==>  mkl._mkl_linear(x, P, W, b, M)
    addmm(b, x, A)            ==>  mkl._mkl_linear(x, P', Aᵀ, b, M)       (GPT-2's Conv1D: A = Wᵀ)

    P = mkl._mkl_reorder_linear_weight(W, M),  M = rows of x (batch · sequence) at capture

The product is the same sum x·Wᵀ + b; only the weight's memory layout changes. A plain sgemm
copies ("packs") its weight operand into MKL's blocked layout on every call; packing once when
the graph is loaded removes that copy, which is most of the non-FLOP work for the K×N weights of
a transformer at batch 1 (measured on a 2-core Xeon, M=128: 768→768 0.66 → 0.57 ms, 768→3072
2.94 → 2.50 ms, 3072→768 2.96 → 2.51 ms). It is what Inductor's CPU freezing does for fp32.
M is only the packing hint; other row counts run correctly. Under symbolic shapes (a dynamic
batch or sequence) M is the row count at ``ctx.example_inputs``, the user's example (capture
grows a batch of 1 to 2), or else at the capture's hints, as Inductor's freezing does for its
mkldnn packing; the graph keeps reading ``x``'s rows at run time.

Costs: the packed copy sits beside the dense weight (MKL's op keeps both), so linear weights
take twice the memory. The packed tensor is opaque (no storage), so this is a PyTorch-runtime
lowering, applied at load and never saved (``RUNTIME_PIPELINES``).
"""

from __future__ import annotations

import math

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import (add_constant, add_opaque_constant, aten, example_sizes, find_nodes, get_constant,
                             is_static, remove_unused_constants, size_hint, tensor_meta)


def _mkl_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackLinearWeights(Pass):
    """CPU fp32: linear/addmm with constant weights to MKL GEMMs on weights packed once."""

    name = "pack_linear_weights"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        if ctx.device.type != "cpu" or ctx.precision != "fp32" or not _mkl_available():
            return PassResult(modified=False, stats={"packed": 0})
        packed = 0
        example = example_sizes(gm, ctx.example_inputs)
        for node in find_nodes(gm, aten.linear, aten.addmm):
            operands = self._operands(gm, node, ctx, example)
            if operands is None:
                continue
            x, weight, weight_node, bias_node, rows = operands
            with gm.graph.inserting_before(node):
                if weight_node is None:  # addmm's K×N operand: the op wants the N×K weight
                    weight_node = add_constant(gm, weight, f"{node.name}_weight_t", node)
                packed_node = add_opaque_constant(gm, torch.ops.mkl._mkl_reorder_linear_weight(weight, rows),
                                                  f"{node.name}_mkl_packed")
                new = gm.graph.call_function(torch.ops.mkl._mkl_linear.default,
                                             (x, packed_node, weight_node, bias_node, rows))
            new.meta.update({k: v for k, v in node.meta.items() if k == "val"})
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            packed += 1
        if packed:
            remove_unused_constants(gm)  # addmm's K×N operands, replaced by their transposes
        return PassResult(modified=packed > 0, stats={"packed": packed})

    @staticmethod
    def _operands(gm, node, ctx, example):
        """(x, N×K weight, its node or None if it must be made, bias node, rows) or None."""
        if node.target is aten.linear.default:
            x, weight_node = node.args[0], node.args[1]
            bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            bias = get_constant(gm, bias_node) if bias_node is not None else None
        elif node.target is aten.addmm.default and node.kwargs.get("beta", 1) == 1 and node.kwargs.get("alpha", 1) == 1 \
                and len(node.args) == 3:
            bias_node, x, weight_node = node.args  # weight_node is the K×N operand here
            bias = get_constant(gm, bias_node)
            if bias is None or bias.dim() != 1:
                ctx.refuse(node, "addmm's bias is not a constant vector")
                return None
        else:
            return None
        weight = get_constant(gm, weight_node)
        if weight is None or (bias_node is not None and bias is None):
            ctx.refuse(node, "weight or bias is not a constant")
            return None
        x_meta = tensor_meta(x)
        if weight.dtype != torch.float32 or weight.dim() != 2 or x_meta is None or x_meta.dtype != torch.float32 \
                or x_meta.dim() < 2:
            ctx.refuse(node, "only fp32 linears with an input of rank 2 or more are packed")
            return None
        if not is_static(x_meta.shape[-1]):
            ctx.refuse(node, "the input's feature size is symbolic")
            return None
        if bias is not None and bias.dtype != torch.float32:
            ctx.refuse(node, "bias is not fp32")
            return None
        rows = max(1, math.prod(size_hint(x_meta.shape[:-1], example)))  # the packing hint: the example's rows
        if node.target is aten.addmm.default:  # transposed only now that it will be used
            return x, weight.t().contiguous(), None, bias_node, rows
        return x, weight, weight_node, bias_node, rows
