"""Run masked attention on ORT's flash path when the mask only hides padded keys.

    y = MHA(q, k, v, b, attention_bias=M)                      M: (B|1, H|1, Sq|1, Skv)
        ==>  keep = the keys M leaves visible
             y = If(M is a key padding mask,
                    then: MHA(q, Gather(k, keep, axis=1), Gather(v, keep, axis=1), b)     (no mask)
                    else: MHA(q, k, v, b, attention_bias=M))

"M is a key padding mask" is checked at run time, on the mask the call brings: every entry is 0
or hidden (at most half the dtype's minimum, -inf included), each key is hidden from every row
of M or from none (so every batch row pads the same keys), and at least one key is visible.
Then a hidden key's weight is exp(-inf) = 0 in softmax(QKᵀ·s + M): dropping it changes neither
the denominator nor the weighted sum of values, and the visible keys' bias is 0, so the mask
can go. BERT at batch 1 always qualifies, whatever its padding; a batch whose rows pad
differently takes the else branch, which is the node as it was.

Why it pays on the CPU provider: ORT's CPU MultiHeadAttention takes its flash-attention kernel
only without a mask; with one it materialises the (B, H, Sq, Skv) scores. The check and the key
indices are computed once per mask and shared by every attention layer that reads it.

A mask that reads no input data is decided once, when the pass runs (evaluated like
``split_causal_attention`` evaluates one): ViT's exported attention carries an all-zero
constant bias, which only costs the flash path, so it goes; GPT-2's causal mask hides keys from
some rows only and is left to ``split_causal_attention``.

Dynamic sizes: the run-time check reads the mask's shape as it comes (no size is written into
the graph). A mask that reads no input data but changes with a symbolic size (GPT-2's causal
mask under a dynamic sequence length) is sampled at several sizes: it is dropped only if it is
the same at all of them (then it is one constant), left alone if it hides keys from some rows
only at any of them, and otherwise checked at run time like a mask read from an input.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from accelc.onnx.pass_base import (OnnxPass, OnnxPassContext, PassResult, UniqueNames, hiding_bias, masked_attention,
                                   plain_self_attention_blocker, sample_shape_only, same_at_every_size)

MIN_OPSET = 18  # ReduceMin/ReduceMax take their axes as an input from opset 18 on


def _unsupported(node: ir.Node) -> str | None:
    """Why this masked MHA can't take the padded-keys path, or None."""
    reason = plain_self_attention_blocker(node)
    mask = node.inputs[5]
    if reason is None and (mask.shape is None or len(mask.shape) != 4
                           or mask.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16)):
        reason = "its attention_bias is not a 4-D float tensor"
    return reason


def fixed_visible_keys(bias: np.ndarray) -> np.ndarray | None:
    """The indices of the keys a fixed ``bias`` leaves visible when it is a key padding mask
    (module docstring), else None: what :func:`padded_keys_check` decides at run time."""
    rows = bias.reshape(-1, bias.shape[-1])
    hidden = rows <= hiding_bias(bias.dtype)
    if not (hidden | (rows == 0)).all():
        return None
    everywhere, somewhere = hidden.all(axis=0), hidden.any(axis=0)
    if (everywhere != somewhere).any() or everywhere.all():
        return None
    return np.nonzero(~everywhere)[0].astype(np.int64)


class _Builder:
    """Appends named nodes to a list; every value it makes gets a name unique in the model."""

    def __init__(self, prefix: str, names: UniqueNames):
        self.prefix, self.names, self.nodes = prefix, names, []

    def name(self, what: str) -> str:
        return self.names(f"{self.prefix}_{what}")

    def const(self, what: str, array: np.ndarray) -> ir.Value:
        return self.op("Constant", [], what, value=ir.tensor(array))

    def op(self, op_type: str, inputs: list, what: str, domain: str = "", **attrs) -> ir.Value:
        node = ir.Node(domain, op_type, inputs, attributes=[_attr(k, v) for k, v in attrs.items()],
                       name=self.name(what), outputs=[ir.Value(name=self.name(what))])
        self.nodes.append(node)
        return node.outputs[0]


def _attr(key: str, value) -> ir.Attr:
    return ir.AttrTensor(key, value) if isinstance(value, ir.Tensor) else ir.AttrInt64(key, value)


def padded_keys_check(b: _Builder, mask: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(ok, keep): ok is a bool scalar, true when ``mask`` is a key padding mask (module
    docstring); keep is the int64 indices of its visible keys."""
    hidden_at = np.array(hiding_bias(mask.dtype.numpy()), dtype=mask.dtype.numpy())
    rows = b.op("Flatten", [mask], "rows", axis=len(mask.shape) - 1)  # (B·H·Sq, Skv), whatever the sizes
    hidden = b.op("LessOrEqual", [rows, b.const("hidden_at", hidden_at)], "hidden")
    zero = b.op("Equal", [rows, b.const("zero", np.zeros((), hidden_at.dtype))], "zero")
    as_float = lambda v, what: b.op("Cast", [v], what, to=ir.DataType.FLOAT.value)  # noqa: E731
    hidden_f = as_float(hidden, "hidden_f")
    axis0 = b.const("axis0", np.array([0], np.int64))
    hidden_everywhere = b.op("ReduceMin", [hidden_f, axis0], "hidden_everywhere", keepdims=0)  # per key
    hidden_somewhere = b.op("ReduceMax", [hidden_f, axis0], "hidden_somewhere", keepdims=0)
    checks = [
        as_float(b.op("Or", [hidden, zero], "zero_or_hidden"), "zero_or_hidden_f"),  # no other values
        as_float(b.op("Equal", [hidden_everywhere, hidden_somewhere], "same_in_every_row"), "same_f"),
        b.op("Sub", [b.const("one", np.ones(1, np.float32)), hidden_everywhere], "visible"),
    ]
    flat_shape = b.const("flat", np.array([-1], np.int64))
    flat = [b.op("Reshape", [c, flat_shape], "flat") for c in checks]
    every_entry_ok = b.op("ReduceMin", [b.op("Concat", flat[:2], "entries", axis=0)], "entries_ok", keepdims=0)
    some_key_visible = b.op("ReduceMax", [flat[2]], "some_visible", keepdims=0)
    ok = b.op("Cast", [b.op("Mul", [every_entry_ok, some_key_visible], "ok_f")], "ok", to=ir.DataType.BOOL.value)
    visible = b.op("Equal", [hidden_everywhere, b.const("f0", np.zeros((), np.float32))], "visible_b")
    keep = b.op("Reshape", [b.op("NonZero", [visible], "visible_at"), flat_shape], "keep")
    return ok, keep


def _branch(name: str, nodes: list[ir.Node], output: ir.Value) -> ir.Graph:
    return ir.Graph(inputs=[], outputs=[output], nodes=nodes, name=name)


def _unmasked(node: ir.Node, b: _Builder, keep: ir.Value | None) -> ir.Node:
    """``node`` without its mask, on the keys ``keep`` (all of them when None)."""
    q, k, v, proj_bias = (list(node.inputs) + [None] * 4)[:4]
    if keep is not None:
        k, v = b.op("Gather", [k, keep], "k", axis=1), b.op("Gather", [v, keep], "v", axis=1)
    out = node.outputs[0]
    return ir.Node("com.microsoft", "MultiHeadAttention", [q, k, v, proj_bias],
                   attributes=list(node.attributes.values()), name=b.name("mha"),
                   outputs=[ir.Value(name=b.name("out"), type=out.type, shape=out.shape)])


def _replace(model: ir.Model, node: ir.Node, new_nodes: list[ir.Node]) -> None:
    ir.convenience.replace_nodes_and_values(model.graph, node, [node], new_nodes, node.outputs[:1], new_nodes[-1].outputs[:1])


def _replace_with_if(model: ir.Model, node: ir.Node, prefix: str, ok: ir.Value, keep: ir.Value, names: UniqueNames) -> None:
    """The If that takes ``node``'s place: flash attention on the kept keys, or ``node`` as it was."""
    out = node.outputs[0]
    then = _Builder(prefix, names)
    flash = _unmasked(node, then, keep)
    masked = ir.Node("com.microsoft", "MultiHeadAttention", list(node.inputs)[:6],
                     attributes=list(node.attributes.values()), name=then.name("masked_mha"),
                     outputs=[ir.Value(name=then.name("masked_out"), type=out.type, shape=out.shape)])
    branch = ir.Node("", "If", [ok], attributes=[
        ir.AttrGraph("then_branch", _branch("padded_keys", [*then.nodes, flash], flash.outputs[0])),
        ir.AttrGraph("else_branch", _branch("masked", [masked], masked.outputs[0])),
    ], name=then.name("if"), outputs=[ir.Value(name=then.name("if_out"), type=out.type, shape=out.shape)])
    _replace(model, node, [branch])


def _plan(model: ir.Model, mask: ir.Value, b: _Builder) -> tuple[str, ir.Value | None, ir.Value | None]:
    """(how, ok, keep) for the attention reading ``mask``; nodes it needs go into ``b``.

    "fixed": the mask reads no input data, is the same at every size, and only pads keys; keep is
    the kept keys (None: all).
    "refuse": it reads no input data and hides keys from some rows only (at some size).
    "run_time": it reads input data, or pads keys at every sampled size but not the same ones;
    ok and keep are :func:`padded_keys_check`'s.
    """
    samples = sample_shape_only(model, mask)
    if samples is None:
        return ("run_time", *padded_keys_check(b, mask))
    if any(fixed_visible_keys(s) is None for s in samples):
        return ("refuse", None, None)
    fixed = same_at_every_size(samples)
    if fixed is None:
        return ("run_time", *padded_keys_check(b, mask))
    keep = fixed_visible_keys(fixed)
    return ("fixed", None, None if len(keep) == fixed.shape[-1] else b.const("keep", keep))


class DropPaddedKeys(OnnxPass):
    """Masked MHA whose mask only pads keys ==> MHA without a mask on the visible keys."""

    name = "drop_padded_keys"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if model.opset_imports.get("", 0) < MIN_OPSET:
            return PassResult(False, {})
        names = UniqueNames(model)
        plans: dict[int, tuple[str, ir.Value | None, ir.Value | None]] = {}  # once per mask, shared by its readers
        stats = {"unmasked": 0, "checked_at_run_time": 0}
        for node in masked_attention(model):
            reason = _unsupported(node)
            if reason is not None:
                ctx.refuse(node, reason)
                continue
            mask = node.inputs[5]
            b = _Builder(f"{self.name}_{sum(stats.values())}", names)
            if id(mask) not in plans:  # its nodes go before the mask's first reader
                plans[id(mask)] = _plan(model, mask, b)
                model.graph.insert_before(node, b.nodes)
                b.nodes = []
            how, ok, keep = plans[id(mask)]
            if how == "refuse":
                ctx.refuse(node, "its mask reads no input data and hides keys from some query rows only (split_causal_attention's case)")
            elif how == "fixed":
                unmasked = _unmasked(node, b, keep)
                _replace(model, node, [*b.nodes, unmasked])
                stats["unmasked"] += 1
            else:
                _replace_with_if(model, node, b.name("layer"), ok, keep, names)
                stats["checked_at_run_time"] += 1
        return PassResult(sum(stats.values()) > 0, stats)
