"""Common-subexpression elimination.

    a = f(x, k); b = f(x, k)    ==> a = f(x, k); b = a

Two calls are the same when they call the same op on the same argument nodes and equal
literal arguments. Ops that mutate, draw random numbers or have side effects never merge;
``get_attr`` nodes for the same attribute merge too.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult


def _freeze(value):
    """A hashable key for an argument; nodes by identity, containers element-wise."""
    if isinstance(value, torch.fx.Node):
        return ("node", value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format, int, float, bool, str, type(None))):
        return (type(value).__name__, value)
    raise TypeError  # unhashable or unusual literal: do not merge


def _mergeable(node: torch.fx.Node) -> bool:
    if node.op == "get_attr":
        return True
    if node.op != "call_function" or node.is_impure():
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        if target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
            return False
        return True
    return target.__module__ == "_operator"  # getitem and friends


class EliminateCommonSubexpressions(Pass):
    """Merge nodes that compute the same pure op on the same inputs."""

    name = "eliminate_common_subexpressions"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        seen: dict = {}
        merged = 0
        for node in list(gm.graph.nodes):
            if not _mergeable(node):
                continue
            try:
                key = (node.op, node.target, _freeze(node.args), _freeze(node.kwargs))
            except TypeError:
                continue
            original = seen.setdefault(key, node)
            if original is node:
                continue
            node.replace_all_uses_with(original)
            gm.graph.erase_node(node)
            merged += 1
        return PassResult(modified=merged > 0, stats={"merged": merged})
