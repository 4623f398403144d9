"""Remove operations that do nothing at inference time.

    dropout(x, p, train=False)            ==> x
    alias(x) | detach(x)                  ==> x
    clone(x)                              ==> x      (strides kept)
    contiguous(x, fmt)                    ==> x      (x already contiguous in fmt)
    to(x, same dtype, same device)        ==> x      (no copy=True, strides kept)
    view/reshape/expand(x, x.shape)       ==> x
    slice(x, d, 0, end)                   ==> x      (end >= x.size(d), step 1: the whole dim)
    x * 1 | 1 * x | x / 1                 ==> x      (1 a literal or an all-ones constant)
    x + 0 | 0 + x | x - 0                 ==> x      (0 a literal or an all-zeros constant)

Each rewrite is the identity on values (``x + 0`` may turn ``-0.0`` into ``+0.0``, which compares
equal). The conditions keep it the identity on shape, dtype and strides too: broadcasting against
the constant must not change the shape, type promotion must not change the dtype, and the result
must have the strides of ``x`` so later ``view`` calls see what they saw before.

Symbolic shapes: sizes and strides are compared as expressions (``s0`` equals ``s0``, never
``s1``, whatever the example had), without installing guards, so an op is removed only when it
is the identity at every shape the graph accepts; ``expand(x, [s0, 4])`` of an ``x`` of shape
``[s1, 4]`` stays.

Removing a copy (``clone``, ``to``, ``x * 1``...) makes its users share ``x``'s memory, so it is
refused when the copy or ``x`` is mutated in place, or when a graph input would be returned as an
output itself.
"""

from __future__ import annotations

import numbers

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, get_constant, is_op, same_size, tensor_meta

_ALWAYS_IDENTITY = (aten.alias, aten.detach, aten.lift_fresh_copy)
_SAME_SHAPE_IDENTITY = (aten.view, aten.reshape, aten.expand, aten._unsafe_view, aten.slice)
_COPIES = (aten.clone, aten.contiguous, aten.to, aten._to_copy)
# op -> (neutral element, may the neutral element come first?)
_ARITHMETIC = {aten.mul: (1, True), aten.div: (1, False), aten.add: (0, True), aten.sub: (0, False)}
_MAX_CONSTANT_NUMEL = 1 << 20  # larger constants are not scanned for all-ones/all-zeros


def _mutates(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and getattr(schema, "is_mutable", False))


def _named_args(node: torch.fx.Node) -> dict:
    """The call's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    named = {a.name: a.default_value for a in schema.arguments if a.has_default_value()}
    named.update(zip((a.name for a in schema.arguments), node.args))
    named.update(node.kwargs)
    return named


def _is_value(gm, arg, value) -> bool:
    """True when ``arg`` is the number ``value`` or a small constant tensor filled with it."""
    if isinstance(arg, (bool, torch.SymInt, torch.SymFloat, torch.SymBool)):
        return False  # a symbolic scalar is the neutral element only for some inputs
    if isinstance(arg, numbers.Number):
        return arg == value
    tensor = get_constant(gm, arg)
    if tensor is None or tensor.numel() == 0 or tensor.numel() > _MAX_CONSTANT_NUMEL:
        return False
    return bool((tensor == value).all())


class RemoveNoops(Pass):
    """Remove eval-mode dropout and identity ops (alias, detach, x*1, x+0, same-type to, redundant clone/contiguous/view)."""

    name = "remove_noops"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        removed = 0
        for node in list(gm.graph.nodes):
            source = self._identity_source(gm, node, ctx)
            if source is None:
                continue
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            removed += 1
        return PassResult(modified=removed > 0, stats={"removed": removed})

    def _identity_source(self, gm, node: torch.fx.Node, ctx: PassContext):
        if node.op != "call_function" or not node.args:
            return None
        if is_op(node, *_ARITHMETIC):
            source = self._arithmetic_source(gm, node)
            kind = "copy"
        else:
            source = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
            kind = None
        if source is None:
            return None
        if is_op(node, aten.dropout, aten.feature_dropout):
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
            if train:
                ctx.refuse(node, "dropout runs in training mode")
                return None
            return source
        if is_op(node, *_ALWAYS_IDENTITY):
            return source
        out, inp = tensor_meta(node), tensor_meta(source)
        if out is None or inp is None or out.dtype != inp.dtype or out.device != inp.device or not same_size(out, inp):
            return None
        if is_op(node, *_COPIES):
            kind = "copy"
        if kind == "copy":
            if not same_size(out.stride(), inp.stride()):
                return None
            if self._copy_is_observable(node, source):
                ctx.refuse(node, "its result or its input is mutated in place or returned, so the copy is observable")
                return None
            if not self._copy_is_plain(node, inp):
                return None
            return source
        if is_op(node, *_SAME_SHAPE_IDENTITY):
            if any(_mutates(user) for user in node.users):
                return None
            if is_op(node, aten.slice):  # same shape from offset 0, step 1: the same view of x
                named = _named_args(node)
                if named.get("start") not in (None, 0) or named.get("step", 1) != 1:
                    return None
            return source
        return None

    @staticmethod
    def _arithmetic_source(gm, node: torch.fx.Node):
        """``x`` when ``node`` is ``x·1``, ``x/1``, ``x+0`` or ``x−0`` (alpha ignored: it scales the 0)."""
        neutral, commutes = next(v for op, v in _ARITHMETIC.items() if is_op(node, op))
        lhs, rhs = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        if isinstance(lhs, torch.fx.Node) and _is_value(gm, rhs, neutral):
            return lhs
        if commutes and isinstance(rhs, torch.fx.Node) and _is_value(gm, lhs, neutral):
            return rhs
        return None

    @staticmethod
    def _copy_is_observable(node: torch.fx.Node, source: torch.fx.Node) -> bool:
        if any(_mutates(user) for user in node.users):
            return True
        if any(_mutates(user) for user in source.users if user is not node):
            return True
        return any(u.op == "output" for u in node.users) and source.op in ("placeholder", "get_attr")

    @staticmethod
    def _copy_is_plain(node: torch.fx.Node, inp: torch.Tensor) -> bool:
        """No argument asks for something other than the same tensor (copy=True, another layout)."""
        if not is_op(node, *_COPIES):
            return True
        named = _named_args(node)
        if named.get("copy", False):
            return False
        fmt = named.get("memory_format")
        if is_op(node, aten.contiguous):
            return inp.is_contiguous(memory_format=fmt if fmt is not None else torch.contiguous_format)
        if fmt not in (None, torch.preserve_format) and not inp.is_contiguous(memory_format=fmt):
            return False
        return named.get("layout") in (None, torch.strided) and named.get("pin_memory") in (None, False)
