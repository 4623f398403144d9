"""Merge linears that read the same input into one GEMM followed by a split.

    y₁ = linear(x, W₁, b₁), …, yₙ = linear(x, Wₙ, bₙ)
        ==>  y = linear(x, [W₁; …; Wₙ], [b₁; …; bₙ]);  y₁, …, yₙ = split_with_sizes(y, [o₁, …, oₙ], -1)

Row i of ``W`` produces output feature i, so stacking the weights along the output axis (dim 0)
and the biases alike gives the outputs side by side along the last axis; each slice is exactly
the original linear (a linear without a bias gets zeros for its part). One wide GEMM reads ``x``
once and keeps the cores busier than n narrow ones (BERT/ViT Q/K/V, gated-MLP gate/up).

The split outputs are strided views into ``y``; a ``view`` of one of them that is not expressible
on those strides would fail, so ``view`` users of the merged outputs become ``reshape`` (the same
values, a copy only when needed). Only linears with constant weights and biases of one dtype
merge; a linear whose output is mutated in place is left alone.
"""

from __future__ import annotations

import operator
from collections import defaultdict

import torch
import torch.fx

from accelc import Pass, PassContext, PassResult
from accelc.patterns import add_constant, aten, find_nodes, get_constant, has_mutating_user, infer_meta, is_op

_MIN_GROUP = 2


class MergeParallelLinears(Pass):
    """Merge linears sharing one input into one linear with concatenated weights plus a split."""

    name = "merge_parallel_linears"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        groups: dict[torch.fx.Node, list[torch.fx.Node]] = defaultdict(list)
        for linear in find_nodes(gm, aten.linear):
            if isinstance(linear.args[0], torch.fx.Node):
                groups[linear.args[0]].append(linear)
        merged = linears = 0
        for source, group in groups.items():
            if len(group) < _MIN_GROUP:
                continue
            usable = [n for n in group if self._usable(gm, ctx, n)]
            by_dtype: dict[torch.dtype, list[torch.fx.Node]] = defaultdict(list)
            for node in usable:
                by_dtype[get_constant(gm, node.args[1]).dtype].append(node)
            for members in by_dtype.values():
                if len(members) >= _MIN_GROUP:
                    self._merge(gm, members)
                    merged += 1
                    linears += len(members)
        return PassResult(modified=merged > 0, stats={"merged": merged, "linears": linears})

    @staticmethod
    def _usable(gm, ctx: PassContext, node: torch.fx.Node) -> bool:
        weight = get_constant(gm, node.args[1])
        bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if weight is None or weight.dim() != 2:
            ctx.refuse(node, "linear weight is not a constant matrix")
            return False
        if bias_node is not None and get_constant(gm, bias_node) is None:
            ctx.refuse(node, "linear bias is not a constant")
            return False
        if has_mutating_user(node):
            ctx.refuse(node, "linear output is modified in place")
            return False
        return True

    @staticmethod
    def _merge(gm: torch.fx.GraphModule, members: list[torch.fx.Node]) -> None:
        graph = gm.graph
        weights, biases = [], []
        for node in members:
            weight = get_constant(gm, node.args[1])
            bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            bias = get_constant(gm, bias_node) if bias_node is not None else None
            weights.append(weight)
            biases.append(bias if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
        has_bias = any((n.args[2] if len(n.args) > 2 else n.kwargs.get("bias")) is not None for n in members)
        first = members[0]  # graph order: every member's users come after it
        w_node = add_constant(gm, torch.cat(weights, 0), f"{first.name}_merged_weight", before=first)
        b_node = add_constant(gm, torch.cat(biases, 0), f"{first.name}_merged_bias", before=first) if has_bias else None
        sizes = [w.shape[0] for w in weights]
        with graph.inserting_before(first):
            wide = graph.call_function(aten.linear.default, (first.args[0], w_node, b_node))
            infer_meta(wide)
            split = graph.call_function(aten.split_with_sizes.default, (wide, sizes, -1))
            infer_meta(split)
            parts = []
            for i in range(len(members)):
                part = graph.call_function(operator.getitem, (split, i))
                part.meta["val"] = split.meta["val"][i] if "val" in split.meta else None
                parts.append(part)
        for node, part in zip(members, parts):
            wide.meta.setdefault("nn_module_stack", node.meta.get("nn_module_stack"))
            for user in list(node.users):
                if is_op(user, aten.view):
                    user.target = aten.reshape.default
            node.replace_all_uses_with(part)
            graph.erase_node(node)
