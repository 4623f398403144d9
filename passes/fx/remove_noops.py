"""Remove operations that do nothing at inference time.

    dropout(x, p, train=False)            ==> x
    alias(x) | detach(x)                  ==> x
    clone(x)                              ==> x      (no memory_format asked; nothing mutates it)
    contiguous(x)                         ==> x      (x already contiguous)
    to(x, same dtype, same device)        ==> x
    view/reshape/expand(x, x.shape)       ==> x

Each rewrite is the identity on values; the conditions in parentheses keep it the identity on
strides and aliasing too, so later ``view`` calls and in-place users see what they saw before.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, is_op, tensor_meta

_ALWAYS_IDENTITY = (aten.alias, aten.detach, aten.lift_fresh_copy)
_SAME_SHAPE_IDENTITY = (aten.view, aten.reshape, aten.expand, aten._unsafe_view)


def _mutates(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and getattr(schema, "is_mutable", False))


class RemoveNoops(Pass):
    """Remove eval-mode dropout and identity ops (alias, detach, same-type to, redundant clone/contiguous/view)."""

    name = "remove_noops"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        removed = 0
        for node in list(gm.graph.nodes):
            source = self._identity_source(node, ctx)
            if source is None:
                continue
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            removed += 1
        return PassResult(modified=removed > 0, stats={"removed": removed})

    def _identity_source(self, node: torch.fx.Node, ctx: PassContext):
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            return None
        source = node.args[0]
        if is_op(node, aten.dropout, aten.feature_dropout):
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
            if train:
                ctx.refuse(node, "dropout runs in training mode")
                return None
            return source
        if is_op(node, *_ALWAYS_IDENTITY):
            return source
        out, inp = tensor_meta(node), tensor_meta(source)
        if out is None or inp is None or out.dtype != inp.dtype or out.device != inp.device or out.shape != inp.shape:
            return None
        if any(_mutates(user) for user in node.users) or any(u.op == "output" for u in node.users) and source.op == "placeholder":
            # Dropping the copy would let a mutation (or the caller) reach the original tensor.
            if is_op(node, aten.clone, aten.contiguous, aten.to, aten._to_copy):
                ctx.refuse(node, "its result is mutated or returned, so the copy is observable")
            return None
        if is_op(node, aten.clone):
            return source if "memory_format" not in node.kwargs else None
        if is_op(node, aten.contiguous):
            return source if inp.is_contiguous() else None
        if is_op(node, aten.to, aten._to_copy):
            extra = set(node.kwargs) - {"dtype", "device", "layout", "copy", "non_blocking"}
            return source if not extra and not node.kwargs.get("copy", False) else None
        if is_op(node, *_SAME_SHAPE_IDENTITY):
            return source
        return None
