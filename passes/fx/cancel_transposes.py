"""Cancel inverse transposes and compose chains of permutes.

    transpose(transpose(x, a, b), a, b)       ==> x
    permute(permute(x, p), q)                 ==> permute(x, p∘q),   (p∘q)[i] = p[q[i]]
    permute(x, identity)                      ==> x

``transpose``, ``t`` and ``permute`` are all permutations of the dimensions: output dim ``i`` is
input dim ``perm[i]``. Applying ``q`` after ``p`` reads input dim ``p[q[i]]``; when that is the
identity the pair returns a tensor with ``x``'s shape and strides, so ``x`` itself can be used.
All of them are views, so the rewrite keeps aliasing (a mutation through the result reached ``x``
before and still does). The outer node is rewritten only when the inner one has no other user,
or when the pair cancels completely.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, is_op, tensor_meta

_PERMUTES = (aten.transpose, aten.permute, aten.t, aten.numpy_T)


def as_permutation(node: torch.fx.Node) -> list[int] | None:
    """The dimension permutation a transpose-like node applies, or None when it is not one."""
    if not is_op(node, *_PERMUTES) or not isinstance(node.args[0], torch.fx.Node):
        return None
    source = tensor_meta(node.args[0])
    if source is None:
        return None
    rank = source.dim()
    if is_op(node, aten.permute):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dims")
        return [d % rank for d in dims] if rank else []
    perm = list(range(rank))
    if is_op(node, aten.t, aten.numpy_T):
        perm.reverse()
        return perm
    a, b = node.args[1] % rank, node.args[2] % rank
    perm[a], perm[b] = perm[b], perm[a]
    return perm


class CancelTransposes(Pass):
    """Remove transpose/permute pairs that undo each other and merge permute chains into one."""

    name = "cancel_transposes"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        cancelled = composed = 0
        for node in list(gm.graph.nodes):
            outer = as_permutation(node)
            if outer is None:
                continue
            if outer == sorted(outer):  # permute(x, identity)
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                cancelled += 1
                continue
            inner_node = node.args[0]
            inner = as_permutation(inner_node)
            if inner is None or len(inner) != len(outer):
                continue
            perm = [inner[i] for i in outer]
            source = inner_node.args[0]
            if perm == list(range(len(perm))):
                node.replace_all_uses_with(source)
                gm.graph.erase_node(node)
                cancelled += 1
            elif len(inner_node.users) == 1:
                with gm.graph.inserting_before(node):
                    merged = gm.graph.call_function(aten.permute.default, (source, perm))
                merged.meta = dict(node.meta)
                node.replace_all_uses_with(merged)
                gm.graph.erase_node(node)
                composed += 1
            else:
                ctx.refuse(node, f"inner {inner_node.name} has {len(inner_node.users)} users")
                continue
            if not inner_node.users:
                gm.graph.erase_node(inner_node)
        return PassResult(modified=cancelled + composed > 0, stats={"cancelled": cancelled, "composed": composed})
