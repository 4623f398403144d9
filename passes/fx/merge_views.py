"""Collapse chains of view-like ops into one reshape.

    view(unsqueeze(flatten(x, 1), 0), s)      ==> reshape(x, s)
    reshape(view(x, s1), shape(x))            ==> x

``view``, ``reshape``, ``unsqueeze``, ``squeeze`` and ``flatten`` keep the tensor's elements in
row-major order and only change how they are grouped into dimensions, so any chain of them is
``reshape(x, final_shape)``. ``reshape`` returns a view whenever one exists and copies otherwise,
so the merged op is valid even where a step in the middle had to copy. A chain is merged only
through links with a single user (nothing else sees the intermediate shapes), and never when a
user mutates a link in place (a copy made in the middle would no longer shield ``x``, or the
reverse).

Symbolic shapes: the chain keeps ``x``'s elements, so ``final_shape`` needs no size of its own
when it has one symbolic size: ``reshape(x, [s, 1, 1, 1])`` is written ``reshape(x, [-1, 1, 1, 1])``
and is right for every ``s``. With several symbolic sizes the chain's last ``view``/``reshape``
already names them (``[sym_size(x, 0), sym_size(x, 1), -1, 16]``) and its shape argument is reused;
other chains (an ``unsqueeze`` of a tensor with two symbolic sizes) are left alone. Whether the
chain returns ``x``'s own shape is decided on the symbolic sizes, never on the example's.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, is_op, is_static, same_size, tensor_meta

_VIEWS = (aten.view, aten.reshape, aten._unsafe_view, aten.unsqueeze, aten.squeeze, aten.flatten)


def _mutates(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _target_shape(node: torch.fx.Node) -> list | str:
    """The shape argument of one ``reshape`` to ``node``'s shape, or why there is none (symbolic)."""
    sizes = tensor_meta(node).shape
    symbolic = [d for d, size in enumerate(sizes) if not is_static(size)]
    static = [int(size) if d not in symbolic else -1 for d, size in enumerate(sizes)]
    if not symbolic:
        return static
    if len(symbolic) == 1 and 0 not in static:  # -1 is the one size numel leaves (none when numel is 0)
        return static
    if is_op(node, aten.view, aten.reshape, aten._unsafe_view):
        return list(node.args[1] if len(node.args) > 1 else node.kwargs["size"])
    return f"the chain ends in {node.target.__name__} with {len(symbolic)} symbolic sizes {tuple(sizes)}"


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
            if tensor_meta(node) is None or tensor_meta(root) is None:
                ctx.refuse(node, "the chain has no recorded shapes")
                continue
            if same_size(node, root):
                node.replace_all_uses_with(root)
                gm.graph.erase_node(node)
            else:
                shape = _target_shape(node)
                if isinstance(shape, str):
                    ctx.refuse(node, shape)
                    continue
                node.target = aten.reshape.default
                node.args, node.kwargs = (root, shape), {}
            for link in chain:  # innermost last: each becomes dead once its user is rewired
                if not link.users:
                    gm.graph.erase_node(link)
            merged += len(chain)
        return PassResult(modified=merged > 0, stats={"merged": merged})
