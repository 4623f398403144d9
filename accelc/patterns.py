"""Graph helpers for passes: finding ops, reading and adding constants, node metadata.

These are the pieces every pattern pass needs; a pass imports them from here (or from
``accelc``), never from accelc's private modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

# For passes that measure their own numeric effect (lower_precision's per-layer sensitivity): the
# same comparison and tolerances the pass manager judges them by.
from .verify import compare_outputs, tolerance, verification_inputs

aten = torch.ops.aten

META_KEY = "accelc"  # all accelc data on a node lives under node.meta["accelc"]


def is_op(node: Any, *targets) -> bool:
    """True when ``node`` is a call to one of ``targets`` (OpOverloads or OpOverloadPackets)."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return any(target is t or (packet is not None and packet is t) for t in targets)


def find_nodes(gm: torch.fx.GraphModule, *targets) -> list[torch.fx.Node]:
    """Calls to any of ``targets``, in graph order (a list, so the caller may edit the graph)."""
    return [n for n in gm.graph.nodes if is_op(n, *targets)]


def fetch_attr(root: torch.nn.Module, target: str) -> Any:
    """The attribute at dotted path ``target`` under ``root`` (a get_attr or call_module target)."""
    for part in target.split("."):
        root = getattr(root, part)
    return root


def get_constant(gm: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor behind a ``get_attr`` node, or None if ``node`` is not a constant."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    obj: Any = gm
    for part in node.target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def add_constant(gm: torch.fx.GraphModule, tensor: torch.Tensor, name_hint: str, before: torch.fx.Node) -> torch.fx.Node:
    """Register ``tensor`` on ``gm`` under a fresh name and return a ``get_attr`` node for it."""
    base = "_accelc_" + "".join(c if c.isalnum() else "_" for c in name_hint).strip("_")
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    gm.register_buffer(name, tensor.detach().contiguous())
    with gm.graph.inserting_before(first_node(gm) if before is None else before):
        node = gm.graph.get_attr(name)
    node.meta["val"] = _fake_like(tensor, before)
    return node


def add_opaque_constant(gm: torch.fx.GraphModule, tensor: torch.Tensor, name_hint: str) -> torch.fx.Node:
    """Like :func:`add_constant` for a tensor without strides (oneDNN/MKL prepacked weights): it is
    registered as is and its ``get_attr`` node (inserted at the current insertion point) has no
    fake ``val``. Such a graph runs in memory but cannot be serialised as an ExportedProgram."""
    base = "_accelc_" + "".join(c if c.isalnum() else "_" for c in name_hint).strip("_")
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    gm.register_buffer(name, tensor)
    return gm.graph.get_attr(name)


def first_node(gm: torch.fx.GraphModule) -> torch.fx.Node:
    return next(iter(gm.graph.nodes))


def _fake_like(tensor: torch.Tensor, near: torch.fx.Node | None):
    """A fake tensor for ``node.meta['val']`` in the same fake mode as its neighbours."""
    mode = None
    for n in ([near] if near is not None else []) + (list(near.all_input_nodes) if near is not None else []):
        val = n.meta.get("val")
        mode = getattr(val, "fake_mode", None)
        if mode is not None:
            break
    if mode is None:
        return tensor.detach()
    with mode:
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device)


def tensor_meta(node: Any) -> torch.Tensor | None:
    """The (fake) tensor recorded for a node's output, if it is a single tensor."""
    if not isinstance(node, torch.fx.Node):
        return None
    val = node.meta.get("val")
    return val if isinstance(val, torch.Tensor) else None


def accelc_meta(node: torch.fx.Node) -> dict:
    """accelc's own metadata dict on a node (created on first use)."""
    return node.meta.setdefault(META_KEY, {})


def only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    """The single user of ``node``, or None when it has zero or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def has_mutating_user(node: torch.fx.Node) -> bool:
    """True when some user of ``node`` modifies a tensor in place (so ``node``'s value is observable)."""
    for user in node.users:
        schema = getattr(user.target, "_schema", None)
        if schema is not None and schema.is_mutable:
            return True
    return False


def make_outputs_contiguous(gm: torch.fx.GraphModule) -> None:
    """Insert ``contiguous`` before every 4-D graph output, so callers of a graph rewritten to
    channels-last see the layout they saw before."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")

    def contiguous(arg):
        meta = tensor_meta(arg)
        if meta is None or meta.dim() != 4:
            return arg
        with gm.graph.inserting_before(output):
            return gm.graph.call_function(aten.contiguous.default, (arg,))

    output.args = torch.fx.node.map_arg(output.args, contiguous)


def remove_unused_constants(gm: torch.fx.GraphModule) -> int:
    """Drop ``get_attr`` nodes with no users and the accelc-made attributes they pointed to."""
    removed = 0
    referenced: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op == "get_attr":
            if node.users:
                referenced.add(node.target)
            else:
                gm.graph.erase_node(node)
                removed += 1
    for name in [n for n, _ in gm.named_buffers(recurse=False) if n.startswith("_accelc_") and n not in referenced]:
        delattr(gm, name)
    return removed


__all__ = [
    "aten", "META_KEY", "is_op", "find_nodes", "fetch_attr", "get_constant", "add_constant", "add_opaque_constant", "tensor_meta",
    "accelc_meta", "only_user", "has_mutating_user", "make_outputs_contiguous", "remove_unused_constants", "first_node",
    "compare_outputs", "tolerance", "verification_inputs",
]


# --- eval-mode BatchNorm as a per-channel affine map (used by the folding passes) ---------------

BATCH_NORM_OPS = (aten.batch_norm, aten._native_batch_norm_legit_no_training)  # eval-mode BN as export writes it


def is_batch_norm(node: Any) -> bool:
    return is_op(node, *BATCH_NORM_OPS)


def batch_norm_affine(gm: torch.fx.GraphModule, bn: torch.fx.Node):
    """An eval-mode BatchNorm as ``(scale, shift, out_node)`` in float64, or ``(None, reason)``.

    ``batch_norm(z) = z·scale + shift`` per channel, ``scale = γ/√(σ²+ε)``, ``shift = β − μ·scale``.
    ``out_node`` is the node whose users see the normalised tensor (the BN itself, or its
    ``getitem 0`` for the tuple-returning form). ``reason`` says why the BN cannot be folded.
    """
    args = list(bn.args)
    if is_op(bn, aten.batch_norm):
        # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
        training = args[5] if len(args) > 5 else bn.kwargs.get("training", False)
        if training:
            return None, "batch_norm runs in training mode"
        eps = args[7] if len(args) > 7 else bn.kwargs.get("eps", 1e-5)
        out = bn
    else:
        # _native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps)
        eps = args[6] if len(args) > 6 else bn.kwargs.get("eps", 1e-5)
        users = list(bn.users)
        if len(users) != 1 or not (users[0].op == "call_function" and getattr(users[0].target, "__name__", "") == "getitem"
                                   and users[0].args[1] == 0):
            return None, "batch_norm's mean/var outputs are used"
        out = users[0]
    gamma_n, beta_n, mean_n, var_n = (args + [None] * 5)[1:5]
    tensors = {}
    for key, node in (("gamma", gamma_n), ("beta", beta_n), ("mean", mean_n), ("var", var_n)):
        if node is None:
            tensors[key] = None
            continue
        value = get_constant(gm, node)
        if value is None:
            return None, f"batch_norm {key} is not a constant"
        tensors[key] = value
    if tensors["mean"] is None or tensors["var"] is None:
        return None, "batch_norm has no running statistics"
    scale = torch.rsqrt(tensors["var"].double() + float(eps))
    if tensors["gamma"] is not None:
        scale = scale * tensors["gamma"].double()
    shift = -tensors["mean"].double() * scale
    if tensors["beta"] is not None:
        shift = shift + tensors["beta"].double()
    return (scale, shift, out), None


def fold_batch_norm_into(gm: torch.fx.GraphModule, ctx, layer: torch.fx.Node, bn: torch.fx.Node, kind: str,
                         scale_weight, out_channels) -> bool:
    """Fold the eval-mode ``bn`` that reads ``layer`` (a call ``op(x, weight, bias, ...)``) into
    the layer's weight and bias; refuse with the reason and return False where it cannot.

    ``batch_norm(z) = z·s + t`` per output channel and ``z = W∘x + b``, so ``W' = scale_weight(W, s)``
    (``W`` scaled along its output-channel axis) and ``b' = b·s + t`` (``t`` alone without a bias).
    ``out_channels(W)`` is the layer's output-channel count. float64 math, cast back to W's dtype.
    """
    if len(layer.users) != 1:
        ctx.refuse(bn, f"{kind} output has {len(layer.users)} users")
        return False
    affine, reason = batch_norm_affine(gm, bn)
    if affine is None:
        ctx.refuse(bn, reason)
        return False
    scale, shift, redirect = affine
    weight = get_constant(gm, layer.args[1])
    bias_node = layer.args[2] if len(layer.args) > 2 else layer.kwargs.get("bias")
    bias = get_constant(gm, bias_node) if bias_node is not None else None
    if weight is None or (bias_node is not None and bias is None):
        ctx.refuse(bn, f"{kind} weight or bias is not a constant")
        return False
    if not weight.is_floating_point():
        ctx.refuse(bn, f"{kind} weight has dtype {weight.dtype}")
        return False
    if scale.numel() != out_channels(weight):
        ctx.refuse(bn, f"batch_norm has {scale.numel()} channels, the {kind} {out_channels(weight)}")
        return False
    new_bias = shift if bias is None else bias.double() * scale + shift
    weight_node = add_constant(gm, scale_weight(weight, scale).to(weight.dtype), f"{layer.name}_folded_weight", before=layer)
    bias_out = add_constant(gm, new_bias.to(weight.dtype), f"{layer.name}_folded_bias", before=layer)
    args = list(layer.args)
    args[1] = weight_node
    if len(args) > 2:
        args[2] = bias_out
    else:
        args.append(bias_out)
    layer.args = tuple(args)
    layer.kwargs = {k: v for k, v in layer.kwargs.items() if k != "bias"}
    redirect.replace_all_uses_with(layer)
    if redirect is not bn:
        gm.graph.erase_node(redirect)
    gm.graph.erase_node(bn)
    return True


__all__ += ["BATCH_NORM_OPS", "is_batch_norm", "batch_norm_affine", "fold_batch_norm_into"]


# --- metadata and scalars for nodes a pass creates (attention, merged linears, precision) -------



def infer_meta(node: torch.fx.Node) -> None:
    """Fill ``node.meta['val']`` by running its op on its inputs' fake tensors (same fake mode).

    Under symbolic shapes the fake kernel decides what it cannot prove (is a size 1? which layout
    do the strides give?) size-obliviously, as for a size of 2 or more, and installs no guard: a
    guard would make the example's answer a fact for every later question about those sizes."""
    import contextlib

    from torch.fx.experimental import _config as shape_config
    from torch.utils._pytree import tree_leaves, tree_map

    def val(a):
        return a.meta.get("val") if isinstance(a, torch.fx.Node) else a

    args, kwargs = tree_map(val, node.args), tree_map(val, node.kwargs)
    mode = next((v.fake_mode for v in tree_leaves((args, kwargs)) if hasattr(v, "fake_mode")), None)
    if mode is None:
        return
    shape_env = getattr(mode, "shape_env", None)
    with contextlib.ExitStack() as stack:
        if shape_env is not None:
            stack.enter_context(shape_config.patch(backed_size_oblivious=True))
            stack.enter_context(shape_env.suppress_guards())
        with mode:
            node.meta["val"] = node.target(*args, **kwargs)


def scalar_value(gm: torch.fx.GraphModule, x: Any) -> float | None:
    """``x`` as a Python number when it is one: a literal, a one-element constant, ``full([], v)``."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    const = get_constant(gm, x)
    if const is not None:
        return float(const.item()) if const.numel() == 1 and const.is_floating_point() else None
    if is_op(x, aten.lift_fresh_copy, aten.clone):
        return scalar_value(gm, x.args[0])
    if is_op(x, aten.scalar_tensor):
        return float(x.args[0])
    if is_op(x, aten.full) and len(x.args[0]) == 0:
        return float(x.args[1])
    return None


__all__ += ["infer_meta", "scalar_value"]


# --- symbolic (dynamic) sizes ------------------------------------------------------------------
#
# A graph captured with dynamic shapes records sizes as ``torch.SymInt`` (``s0``, ``s0*s1``...),
# each with a hint: its value in the example. Comparing SymInts with ``==`` or ``bool()`` asks the
# ShapeEnv to *guard* on the hint's answer (and records that guard for every later query), so a
# pass must never do it: the helpers below decide statically or report "unknown", without guards.


def _sizes(value) -> tuple:
    """The sizes held by ``value``: an int/SymInt, a sequence of them, a tensor or a node's val."""
    if isinstance(value, torch.fx.Node):
        value = value.meta.get("val")
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (int, torch.SymInt)):
        return (value,)
    return tuple(value)


def is_static(value) -> bool:
    """True when every size in ``value`` (an int/SymInt, a shape, a tensor, a node) is a plain number.

    A node without a recorded tensor is not static (nothing is known about it)."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    if isinstance(value, torch.fx.Node) and tensor_meta(value) is None:
        return False
    return all(is_concrete_int(d) for d in _sizes(value))


def static_shape(node: Any) -> list[int] | None:
    """A node's recorded shape as plain ints, or None when it is unknown or has a symbolic size."""
    meta = tensor_meta(node)
    if meta is None or not is_static(meta):
        return None
    return [int(d) for d in meta.shape]


def example_sizes(gm: torch.fx.GraphModule, example_inputs: tuple) -> dict:
    """The value of each input size symbol in ``example_inputs`` (``ctx.example_inputs``: the
    user's example, which capture may have grown, a batch of 1 captured as 2), read off the graph's
    placeholders; empty when they do not line up. For :func:`size_hint`."""
    import sympy

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        return {}
    values = {}
    for node, x in zip(placeholders, example_inputs):
        meta = tensor_meta(node)
        if meta is None or not isinstance(x, torch.Tensor) or x.dim() != meta.dim():
            continue
        for size, real in zip(meta.shape, x.shape):
            if isinstance(size, torch.SymInt):
                expr = sympy.sympify(size.node.shape_env.replace(size.node.expr))
                if expr.is_Symbol:
                    values.setdefault(expr, sympy.Integer(int(real)))
    return values


def size_hint(value, example: dict | None = None):
    """The example's value of a size (an int for an int/SymInt, a tuple for a shape/tensor/node):
    its expression at :func:`example_sizes`' values when given, else the capture's hint.

    For optimisation choices only (a packing size, a tile), never for what the graph computes."""
    from torch.fx.experimental.symbolic_shapes import optimization_hint

    def one(size):
        if isinstance(size, torch.SymInt) and example:
            import sympy

            expr = sympy.sympify(size.node.shape_env.replace(size.node.expr)).xreplace(example)
            if expr.is_number:
                return int(expr)
        return optimization_hint(size)

    if isinstance(value, (int, torch.SymInt)):
        return one(value)
    return tuple(one(d) for d in _sizes(value))


def same_size(a, b) -> bool:
    """True when ``a`` and ``b`` (sizes or shapes) are equal for every value of their symbols.

    False when they differ, or when equality holds only for some inputs (``s0`` vs ``s1``):
    decided from the symbolic expressions, never from hints, and without installing guards."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true, sym_eq

    a, b = _sizes(a), _sizes(b)
    if len(a) != len(b):
        return False
    return all(statically_known_true(sym_eq(x, y)) for x, y in zip(a, b))


def known_one(size) -> bool:
    """True when ``size`` is 1 for every input (a broadcast dimension)."""
    return same_size(size, 1)


def broadcasts_to(shape, target) -> bool:
    """True when ``shape`` broadcasts to exactly ``target`` for every value of their symbols."""
    shape, target = _sizes(shape), _sizes(target)
    if len(shape) > len(target):
        return False
    return all(known_one(s) or same_size(s, t) for s, t in zip(reversed(shape), reversed(target)))


def sym_size_node(graph: torch.fx.Graph, source: torch.fx.Node, dim: int) -> torch.fx.Node | int:
    """``source.size(dim)`` for a graph argument: the int when static, else an ``aten.sym_size.int``
    node (inserted at the current insertion point) whose val is the SymInt."""
    size = tensor_meta(source).shape[dim]
    if is_static(size):
        return int(size)
    node = graph.call_function(aten.sym_size.int, (source, dim))
    node.meta["val"] = size
    return node


__all__ += ["is_static", "static_shape", "example_sizes", "size_hint", "same_size", "known_one", "broadcasts_to",
            "sym_size_node"]
