"""Capability split: which nodes a backend can run, as maximal contiguous groups.

Given a predicate ``supported(node) -> bool`` (for example "ONNX Runtime has a kernel for this
op"), walk the call nodes in topological order and cut wherever the answer changes::

    [a b c | D E | f]  ->  [(True, [a, b, c]), (False, [D, E]), (True, [f])]

Contiguity in topological order keeps every group a valid stage of a chain plan (see plan.py),
so groups map one to one onto alternating backend stages. Short unsupported runs inside a
supported region are left as they are: whether a hop is worth it is the cost model's call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.fx

CALL_OPS = ("call_function", "call_method", "call_module")


def split_by_support(gm: torch.fx.GraphModule, supported: Callable[[torch.fx.Node], bool]) -> list[tuple[bool, list[str]]]:
    """Maximal runs of call nodes (topological order) on which ``supported`` agrees."""
    groups: list[tuple[bool, list[str]]] = []
    for node in gm.graph.nodes:
        if node.op not in CALL_OPS:
            continue
        ok = bool(supported(node))
        if groups and groups[-1][0] == ok:
            groups[-1][1].append(node.name)
        else:
            groups.append((ok, [node.name]))
    return groups
