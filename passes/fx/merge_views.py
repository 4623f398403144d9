"""Collapse chains of view-like ops into one reshape.

    view(unsqueeze(flatten(x, 1), 0), s)      ==> reshape(x, s)
    reshape(view(x, s1), shape(x))            ==> x

``view``, ``reshape``, ``unsqueeze``, ``squeeze`` and ``flatten`` keep the tensor's elements in
row-major order and only change how they are grouped into dimensions, so any chain of them is
``reshape(x, final_shape)``. ``reshape`` returns a view whenever one exists and copies otherwise,
so the merged op is valid even where a step in the middle had to copy. A chain is merged only
through links with a single user (nothing else sees the intermediate shapes), only with static
shapes, and never when a user mutates a link in place (a copy made in the middle would no longer
shield ``x``, or the reverse).
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, is_op, tensor_meta

_VIEWS = (aten.view, aten.reshape, aten._unsafe_view, aten.unsqueeze, aten.squeeze, aten.flatten)


def _mutates(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _static_shape(node: torch.fx.Node) -> list[int] | None:
    meta = tensor_meta(node)
    if meta is None or not all(isinstance(d, int) for d in meta.shape):
        return None
    return list(meta.shape)


def _is_link(node) -> bool:
    return is_op(node, *_VIEWS) and isinstance(node.args[0], torch.fx.Node) and not any(_mutates(u) for u in node.users)


class MergeViews(Pass):
    """Merge chains of view/reshape/unsqueeze/squeeze/flatten into a single reshape."""

    name = "merge_views"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        merged = 0
        for node in list(gm.graph.nodes):
            if node.op != "call_function" or not _is_link(node):
                continue
            chain, root = [], node.args[0]
            while _is_link(root) and len(root.users) == 1:
                chain.append(root)
                root = root.args[0]
            if not chain:
                continue
            shape, root_shape = _static_shape(node), _static_shape(root)
            if shape is None or root_shape is None:
                ctx.refuse(node, "the chain has dynamic shapes")
                continue
            if shape == root_shape:
                node.replace_all_uses_with(root)
                gm.graph.erase_node(node)
            else:
                node.target = aten.reshape.default
                node.args, node.kwargs = (root, shape), {}
            for link in chain:  # innermost last: each becomes dead once its user is rewired
                if not link.users:
                    gm.graph.erase_node(link)
            merged += len(chain)
        return PassResult(modified=merged > 0, stats={"merged": merged})
