"""Precompute subgraphs whose value does not depend on the inputs' values.

    y = f(g(W), arange(16))    (W a parameter/buffer, literals only)   ==> y = <constant tensor>

A node is constant when it is a pure, deterministic ATen call whose tensor arguments are all
constant: ``get_attr`` weights and buffers, literals, and factories such as ``arange``/``zeros``.
Ops that read only the *shape* of an input (``zeros_like``, ``ones_like``, ``full_like``) are
constant too when that shape is static, and ``new_ones``/``new_zeros``/``new_full``, which read
only its dtype and device, always are. Under symbolic shapes (a dynamic batch or sequence) a
shape read of a symbolic shape (refused: "reads the symbolic shape of ..."), and everything
computed from a size (``arange(sym_size(x, 1))``), stays in the graph: its value follows the input.
The pass evaluates the constant subgraph once, in graph order, and replaces each constant node
that a non-constant node (or the output) uses, the frontier, by a ``get_attr`` of its value
(weight transposes, position ids, masks built from static shapes).

Bounded: a frontier value larger than 4x the bytes of the constants it was computed from and
larger than 1 MiB (``expand`` of a small buffer, a big ``zeros``) stays computed at run time,
as do values that something mutates in place (a folded buffer would be changed for the next
call). Random ops (``nondeterministic_seeded``) and ops with side effects are never folded.
"""

from __future__ import annotations

import operator

import torch
from torch.utils._pytree import tree_leaves

from accelc import Pass, PassContext, PassResult
from accelc.patterns import add_constant, aten, get_constant, has_mutating_user, is_op, static_shape, tensor_meta

MAX_GROWTH = 4           # a folded value may be up to this many times its inputs' bytes ...
MAX_FREE_BYTES = 1 << 20  # ... or up to this size, whichever is larger

# Ops whose result depends on an input's shape, dtype and device only, never on its values; the
# new_* ones take their size as an argument and read only the dtype and device.
_SHAPE_ONLY = (aten.zeros_like, aten.ones_like, aten.full_like)
_DTYPE_ONLY = (aten.new_ones, aten.new_zeros, aten.new_full)


def _nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def _foldable_op(node: torch.fx.Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return True
    if not isinstance(node.target, torch._ops.OpOverload) or node.is_impure():
        return False
    schema = node.target._schema
    if schema.is_mutable or torch.Tag.nondeterministic_seeded in node.target.tags:
        return False
    return not any(isinstance(r.type, torch.NoneType) for r in schema.returns) and len(schema.returns) > 0


def _shape_stand_in(node: torch.fx.Node, shape_matters: bool = True):
    """A real tensor with the static shape/dtype/device recorded for ``node`` (values unused), or
    None when that shape is unknown or symbolic (and ``shape_matters``)."""
    meta, shape = tensor_meta(node), static_shape(node)
    if meta is None or (shape is None and shape_matters):
        return None
    return torch.zeros(shape if shape_matters else (), dtype=meta.dtype, device=meta.device)


class FoldConstants(Pass):
    """Evaluate subgraphs that depend only on weights, buffers and literals once, at compile time."""

    name = "fold_constants"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        values: dict[torch.fx.Node, object] = {}
        source_bytes: dict[torch.fx.Node, int] = {}  # bytes of the weights each value was made from
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                tensor = get_constant(gm, node)
                if tensor is not None:
                    values[node], source_bytes[node] = tensor, 0
                continue
            if not _foldable_op(node):
                continue
            value = self._evaluate(node, values, ctx)
            if value is not None:
                values[node] = value
                source_bytes[node] = sum(
                    _nbytes(values[a]) if a.op == "get_attr" else source_bytes.get(a, 0)
                    for a in node.all_input_nodes if a in values
                )

        folded = skipped = 0
        for node in list(values):
            if node.op == "get_attr" or not isinstance(values[node], torch.Tensor):
                continue
            if all(user in values for user in node.users):
                continue  # not on the frontier: its constant users are folded instead
            value = values[node]
            if _nbytes(value) > max(MAX_GROWTH * source_bytes[node], MAX_FREE_BYTES):
                ctx.refuse(node, f"folded value would take {_nbytes(value)} bytes from {source_bytes[node]}")
                skipped += 1
                continue
            if has_mutating_user(node):
                ctx.refuse(node, "its value is mutated in place")
                continue
            constant = add_constant(gm, value.clone(), f"{node.name}_folded", before=node)
            node.replace_all_uses_with(constant, delete_user_cb=lambda user: user is not constant)
            folded += 1
        if folded:
            self._erase_dead(gm, values)
        return PassResult(modified=folded > 0, stats={"folded": folded, "too_large": skipped})

    @staticmethod
    def _evaluate(node: torch.fx.Node, values: dict, ctx: PassContext):
        """The node's value when all its inputs are known constants (or shape-only reads)."""
        shape_only = is_op(node, *_SHAPE_ONLY, *_DTYPE_ONLY)
        missing = []

        def lookup(arg):
            if arg in values:
                return values[arg]
            if shape_only and arg is node.args[0]:
                stand_in = _shape_stand_in(arg, shape_matters=not is_op(node, *_DTYPE_ONLY))
                if stand_in is not None:
                    return stand_in
            missing.append(arg)
            return None

        args = torch.fx.node.map_arg(node.args, lookup)
        kwargs = torch.fx.node.map_arg(node.kwargs, lookup)
        if missing:
            if shape_only and missing == [node.args[0]] and tensor_meta(node.args[0]) is not None:
                ctx.refuse(node, f"reads the symbolic shape of {node.args[0].name}")
            return None
        try:
            with torch.no_grad():
                value = node.target(*args, **kwargs)
        except Exception as exc:  # an op that cannot run eagerly here just stays in the graph
            ctx.refuse(node, f"evaluating it raised {type(exc).__name__}")
            return None
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.requires_grad:
            value = value.detach()
        return value

    @staticmethod
    def _erase_dead(gm: torch.fx.GraphModule, values: dict) -> None:
        for node in reversed(list(gm.graph.nodes)):
            if node in values and node.op == "call_function" and not node.users:
                gm.graph.erase_node(node)
