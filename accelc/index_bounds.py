"""Where a captured graph indexes a table: the sizes and values a call may have before it reads
past the table's end.

    embedding(wpe, arange(seq) + c)      ==>  seq ≤ rows(wpe) − c        (GPT-2's positions)
    embedding(wte, input_ids)            ==>  0 ≤ input_ids < rows(wte)  (token ids)

Eager PyTorch raises ``IndexError`` past the end of an embedding table, and so do accelc's
PyTorch runtime and ONNX Runtime, but not every runtime: OpenVINO's Gather returns zeros for an
index out of range and ONNX's Gather reads a negative index from the end. A call past a table
would then get an answer where eager has none, a wrong one. So the guard refuses such calls before
any runtime sees them: a size bound narrows the signature's dynamic range (the report says why), a
value bound is checked on every call of that input (one ``aminmax``, a few µs).

Only bounds the graph states outright are found: indices that are a placeholder (or a view of
one), or an
``arange`` of one placeholder's dynamic size through unsqueeze/expand/view/clone and the addition
of a constant. Anything else (positions computed from a mask, say) finds no bound and is left to
the runtimes, which is what the verification covers.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import torch
import torch.fx

from .patterns import fetch_attr
from .shapes import Signature

aten = torch.ops.aten

# Ops that keep an index tensor's values (and so its largest value) unchanged.
_SAME_VALUES = {aten.unsqueeze.default, aten.expand.default, aten.view.default, aten.reshape.default,
                aten.clone.default, aten._to_copy.default, aten.alias.default}
_ADD = {aten.add.Tensor, aten.add.Scalar, operator.add}


@dataclass(frozen=True)
class SizeBound:
    """Input ``input_index``'s dim ``dim`` may be at most ``most`` (it indexes ``table``'s rows)."""

    input_index: int
    dim: int
    most: int
    table: str


@dataclass(frozen=True)
class ValueBound:
    """Input ``input_index``'s values index ``table``: they must lie in 0..rows-1."""

    input_index: int
    rows: int
    table: str


def table_bounds(gm: torch.fx.GraphModule) -> tuple[list[SizeBound], list[ValueBound]]:
    """The size and value bounds of every embedding lookup in ``gm`` (see the module docstring)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    index_of = {node: i for i, node in enumerate(placeholders)}
    sizes, values = [], []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not aten.embedding.default:
            continue
        weight, indices = node.args[0], node.args[1]
        if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr":
            continue
        rows = int(fetch_attr(gm, weight.target).shape[0])
        source = _through_same_values(indices)
        if source in index_of:
            values.append(ValueBound(index_of[source], rows, weight.target))
            continue
        found = _arange_of_size(indices, index_of)
        if found is not None:
            input_index, dim, offset = found
            sizes.append(SizeBound(input_index, dim, rows - offset, weight.target))
    return sizes, values


def _through_same_values(node):
    """The node whose values ``node`` has, past the ops that only move them (views, copies)."""
    while isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in _SAME_VALUES:
        node = node.args[0]
    return node


def _arange_of_size(node, index_of: dict):
    """(input index, dim, c) when ``node`` is arange(size of that dim) + c, else None."""
    offset = 0
    while isinstance(node, torch.fx.Node) and node.op == "call_function":
        if node.target in _SAME_VALUES:
            node = node.args[0]
        elif node.target in _ADD and len(node.args) == 2 and isinstance(node.args[1], int):
            offset += node.args[1]
            node = node.args[0]
        elif node.target is aten.arange.default or node.target is aten.arange.start:
            start, end = (0, node.args[0]) if node.target is aten.arange.default else node.args[:2]
            if not isinstance(start, int) or node.kwargs.get("step", 1) != 1:
                return None
            size = _size_of_input(end, index_of)
            return None if size is None else (*size, offset)  # its largest value: size − 1 + offset
        else:
            return None
    return None


def _size_of_input(node, index_of: dict):
    """(input index, dim) when ``node`` is ``sym_size(placeholder, dim)``, else None."""
    if (isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is aten.sym_size.int
            and node.args[0] in index_of):
        return index_of[node.args[0]], int(node.args[1])
    return None


def bounded_signature(signature: Signature, gm: torch.fx.GraphModule) -> tuple[Signature, list[str]]:
    """``signature`` with the table bounds of ``gm`` added: each value bound on its input, each
    size bound as the end of its symbol's range. Returns (signature, why each range was narrowed)."""
    sizes, values = table_bounds(gm)
    inputs = list(signature.inputs)
    for bound in values:
        spec = inputs[bound.input_index]
        if spec.dtype is not None and not spec.dtype.is_floating_point:
            below = bound.rows if spec.values_below is None else min(spec.values_below, bound.rows)
            inputs[bound.input_index] = replace(spec, values_below=below)
    signature, notes = Signature(inputs, dict(signature.ranges)), []
    for bound in sizes:
        symbol = inputs[bound.input_index].shape[bound.dim]
        if not isinstance(symbol, str) or symbol not in signature.ranges:
            continue
        lo, hi = signature.ranges[symbol]
        if hi is None or hi > bound.most:
            signature = signature.with_range(symbol, lo, max(lo, bound.most))
            notes.append(f"{symbol} at most {bound.most}: past that it indexes beyond the {bound.most} rows "
                         f"of {bound.table} (eager raises there)")
    return signature, notes
