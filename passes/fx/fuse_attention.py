"""Rewrite attention written out by hand into one ``scaled_dot_product_attention`` call.

    s = matmul(Q, Kᵀ)                       Kᵀ = transpose(K, -2, -1), or any (..., E, S) tensor
    s = s·c | s/c | matmul(Q·c, Kᵀ)         scale, optional; several multiply
    s = s + M | masked_fill(s, B, v) | where(B, s, v)       masks, optional, any number, any order
    P = softmax(s, -1)                      dtype casts around it and eval-mode dropout allowed
    O = matmul(P, V)
        ==>  O = scaled_dot_product_attention(Q, K, V, attn_mask=A, scale=c)

SDPA computes ``softmax(Q·Kᵀ·scale + A)·V``: a float ``A`` is added before the softmax, a boolean
``A`` means True = attend (False gets −∞). ``scale`` is always passed: SDPA's default 1/√E is not
what a T5-style model (no scaling) computes.

Masks. An additive ``M`` (padding mask, T5 position bias) joins ``A`` as it is. A fill replaces
masked scores by ``v``; additively that is ``s + where(B, v, 0)``, the same softmax when ``v`` is
−∞ or so negative (≤ −1e30, e.g. ``finfo(float32).min``) that ``s + v`` rounds to ``v``. Other
fill values are refused: a fully masked row would come out different. A lone −∞ fill becomes a
boolean mask (``A = ¬B`` for masked_fill, ``B`` for where). A scale applied after a mask scales
that mask's term too. Several terms are summed into one ``A``. Left different on purpose: a row
whose keys are all masked with −∞ is NaN in eager and 0 in SDPA.

Symbolic shapes: Q, Kᵀ and V must have the same batch dims and a mask must broadcast to the
scores for *every* size the graph accepts, decided on the symbolic sizes (``s0`` matches ``s0``
or a 1, never ``s1``) without installing guards; nothing in the rewrite depends on a size.

Stats: ``fused`` blocks rewritten and ``present`` candidates (a softmax whose probabilities feed
the left operand of a matmul); every candidate left alone is refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx

from accelc import Pass, PassContext, PassResult
from accelc.patterns import aten, broadcasts_to, find_nodes, infer_meta, is_op, same_size, scalar_value, tensor_meta

_SOFTMAX = (aten.softmax, aten._softmax, aten._safe_softmax)
_MATMUL = (aten.matmul, aten.bmm)
_CASTS = (aten.to, aten._to_copy, aten.type_as)
_ASSERTS = (aten._assert_tensor_metadata,)
_MAX_CHAIN = 8  # ops between the scores and the softmax (or softmax and P·V) we walk through
_VERY_NEGATIVE = -1e30  # a fill at or below this acts like −∞ next to any realistic score


@dataclass
class _Term:
    """A mask term: an additive tensor, or a fill (where ``cond == fill_when`` the score is ``value``)."""

    tensor: torch.fx.Node | None = None
    cond: torch.fx.Node | None = None
    fill_when: bool = True
    value: float = 0.0
    factor: float = 1.0  # scales applied after this term


@dataclass
class _Match:
    q: torch.fx.Node
    kt: torch.fx.Node
    v: torch.fx.Node
    pv: torch.fx.Node
    scores: torch.fx.Node
    scale: float = 1.0
    terms: list[_Term] = field(default_factory=list)
    dead: list[torch.fx.Node] = field(default_factory=list)  # nodes the rewrite leaves unused


def _real_users(node: torch.fx.Node) -> list[torch.fx.Node]:
    """Users that consume the value (shape/dtype assertions do not)."""
    return [u for u in node.users if not is_op(u, *_ASSERTS)]


def _is_float_cast(node) -> bool:
    val = tensor_meta(node)
    return is_op(node, *_CASTS) and val is not None and val.is_floating_point()


def _is_eval_dropout(node) -> bool:
    if not is_op(node, aten.dropout):
        return False
    p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
    return not train or p == 0


def _scale_of(gm, node) -> tuple[float, torch.fx.Node] | None:
    """(c, x) when ``node`` is ``x·c``, ``c·x`` or ``x/c`` with a scalar ``c`` and a tensor ``x``."""
    if is_op(node, aten.mul):
        a, b = node.args[:2]
        for x, c in ((a, b), (b, a)):
            value = scalar_value(gm, c)
            if value is not None and isinstance(x, torch.fx.Node) and scalar_value(gm, x) is None:
                return value, x
    if is_op(node, aten.div):
        value = scalar_value(gm, node.args[1])
        if value and isinstance(node.args[0], torch.fx.Node) and scalar_value(gm, node.args[0]) is None:
            return 1.0 / value, node.args[0]
    return None


class FuseAttention(Pass):
    """Rewrite matmul → scale → mask → softmax → matmul into scaled_dot_product_attention."""

    name = "fuse_attention"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        present = fused = 0
        for softmax in find_nodes(gm, *_SOFTMAX):
            found = _probabilities_consumer(softmax)
            if found is None:
                continue
            present += 1
            match = self._match(gm, softmax, *found)
            if isinstance(match, str):
                ctx.refuse(softmax, match)
                continue
            self._rewrite(gm, match)
            fused += 1
        return PassResult(modified=fused > 0, stats={"fused": fused, "present": present})

    # -- matching ---------------------------------------------------------------------------------

    def _match(self, gm, softmax, pv, forward) -> _Match | str:
        dim = softmax.args[1] if len(softmax.args) > 1 else softmax.kwargs.get("dim")
        rank = tensor_meta(softmax).dim()
        if dim % rank != rank - 1:
            return f"softmax over dim {dim}, not the key axis (-1)"
        for node in forward:
            if len(_real_users(node)) != 1:
                return f"attention probabilities ({node.name}) have {len(_real_users(node))} users"
        walked = _walk_to_scores(gm, softmax.args[0], 0)
        if isinstance(walked, str):
            return walked
        scores, path = walked
        for node in [scores] + [op for op, _ in path]:
            if len(_real_users(node)) != 1:
                return f"attention scores ({node.name}) have {len(_real_users(node))} users"
        q, kt = scores.args[:2]
        match = _Match(q, kt, pv.args[1], pv, scores, dead=[pv, scores, *[op for op, _ in path], *forward, kt])
        pre = _scale_of(gm, q)
        if pre is not None and len(_real_users(q)) == 1:  # matmul(Q·c, Kᵀ)
            match.scale, match.q = pre
            match.dead.append(q)
        for op, scores_arg in path:  # from the product outwards
            if _is_float_cast(op):
                continue
            scaled = _scale_of(gm, op)
            if scaled is not None:
                match.scale *= scaled[0]
                for term in match.terms:
                    term.factor *= scaled[0]
                continue
            term = _mask_term(gm, op, scores_arg)
            if isinstance(term, str):
                return term
            if _depends_on(term.tensor or term.cond, scores):
                return f"{op.name}: the mask is computed from the scores themselves"
            match.terms.append(term)
        return _check_operands(match)

    # -- rewriting --------------------------------------------------------------------------------

    def _rewrite(self, gm, match: _Match) -> None:
        graph = gm.graph
        with graph.inserting_before(match.pv):
            key = _key_from_transposed(graph, match.kt)
            attn_mask = _attn_mask(graph, match.terms, tensor_meta(match.q).dtype)
            sdpa = _call(graph, aten.scaled_dot_product_attention.default, (match.q, key, match.v),
                         {"attn_mask": attn_mask, "scale": float(match.scale)})
        for key_ in ("nn_module_stack", "stack_trace", "source_fn_stack"):
            if key_ in match.pv.meta:
                sdpa.meta[key_] = match.pv.meta[key_]
        match.pv.replace_all_uses_with(sdpa)
        _erase_dead(graph, match.dead)


def _probabilities_consumer(softmax: torch.fx.Node):
    """(matmul(P, V), nodes from the softmax to P) when the softmax feeds a matmul's left operand."""
    forward, cur = [softmax], softmax
    for _ in range(_MAX_CHAIN):
        users = _real_users(cur)
        pv = next((u for u in users if is_op(u, *_MATMUL) and u.args[0] is cur), None)
        if pv is not None:
            return pv, forward
        if len(users) != 1 or not (_is_float_cast(users[0]) or _is_eval_dropout(users[0])):
            return None
        cur = users[0]
        forward.append(cur)
    return None


def _walk_to_scores(gm, cur, depth):
    """(matmul(Q, Kᵀ), [(op, its scores-side argument), ...] from the product outwards), or why not."""
    if depth > _MAX_CHAIN or not isinstance(cur, torch.fx.Node):
        return "no matmul(Q, Kᵀ) within reach of the softmax input"
    if is_op(cur, *_MATMUL):
        return cur, []
    candidates: list = []
    if _is_float_cast(cur):
        candidates = [cur.args[0]]
    elif _scale_of(gm, cur) is not None:
        candidates = [_scale_of(gm, cur)[1]]
    elif is_op(cur, aten.add) and len(cur.args) == 2 and cur.kwargs.get("alpha", 1) == 1:
        candidates = [a for a in cur.args if isinstance(a, torch.fx.Node)]
    elif is_op(cur, aten.masked_fill):
        candidates = [cur.args[0]]
    elif is_op(cur, aten.where):
        candidates = [a for a in cur.args[1:3] if isinstance(a, torch.fx.Node) and scalar_value(gm, a) is None]
    if not candidates:
        return f"{cur.name} ({getattr(cur.target, '__name__', cur.target)}) between the scores and the softmax is not a scale, mask or cast"
    reason = None
    for operand in candidates:  # an add or where has two tensor operands: the scores are one of them
        walked = _walk_to_scores(gm, operand, depth + 1)
        if not isinstance(walked, str):
            return walked[0], walked[1] + [(cur, operand)]
        reason = reason or walked
    return reason


def _mask_term(gm, op, scores_arg) -> _Term | str:
    """The mask that ``op`` applies to the scores (its argument ``scores_arg``)."""
    if is_op(op, aten.add):
        a, b = op.args[:2]
        return _Term(tensor=b if a is scores_arg else a)
    if is_op(op, aten.masked_fill):
        return _fill_term(op, op.args[1], True, scalar_value(gm, op.args[2]))
    cond, a, b = op.args[:3]  # where(cond, s, v) keeps s where cond; where(cond, v, s) fills there
    if a is scores_arg:
        return _fill_term(op, cond, False, scalar_value(gm, b))
    return _fill_term(op, cond, True, scalar_value(gm, a))


def _fill_term(op, cond, fill_when: bool, value) -> _Term | str:
    if value is None:
        return f"{op.name}: the fill value is not a constant scalar"
    if not (value == -math.inf or value <= _VERY_NEGATIVE):
        return f"{op.name}: fill value {value:g} is neither -inf nor the dtype's lowest (a fully masked row would differ)"
    if tensor_meta(cond) is None or tensor_meta(cond).dtype != torch.bool:
        return f"{op.name}: the mask condition is not a boolean tensor"
    return _Term(cond=cond, fill_when=fill_when, value=value)


def _check_operands(match: _Match) -> _Match | str:
    q, kt, v, s = (tensor_meta(n) for n in (match.q, match.kt, match.v, match.scores))
    if q is None or kt is None or v is None or s is None:
        return "Q, Kᵀ or V has no recorded shape"
    if not (q.dim() == kt.dim() == v.dim() >= 3):
        return f"Q/Kᵀ/V ranks {q.dim()}/{kt.dim()}/{v.dim()} differ or are below 3"
    if not (same_size(q.shape[:-2], kt.shape[:-2]) and same_size(q.shape[:-2], v.shape[:-2])):
        return (f"Q/Kᵀ/V batch dims {tuple(q.shape[:-2])}/{tuple(kt.shape[:-2])}/{tuple(v.shape[:-2])} differ "
                "(broadcasting matmul or grouped heads)")
    if not (q.dtype == kt.dtype == v.dtype == tensor_meta(match.pv).dtype) or not q.is_floating_point():
        return "Q, K, V and the output do not share one floating dtype"
    if match.scale <= 0:
        return f"non-positive scale {match.scale:g}"
    for term in match.terms:
        mask = tensor_meta(term.tensor if term.tensor is not None else term.cond)
        if mask is None:
            return "the mask has no recorded shape"
        if term.tensor is not None and not mask.is_floating_point():
            return "the additive mask is not a floating tensor"
        if not broadcasts_to(mask, s):
            return f"mask shape {tuple(mask.shape)} does not broadcast to the scores {tuple(s.shape)}"
    return match


def _key_from_transposed(graph, kt: torch.fx.Node) -> torch.fx.Node:
    """K from Kᵀ: the transpose's input when Kᵀ swaps the last two dims, else a new transpose."""
    rank = tensor_meta(kt).dim()
    if is_op(kt, aten.transpose) and sorted(d % rank for d in kt.args[1:3]) == [rank - 2, rank - 1]:
        return kt.args[0]
    return _call(graph, aten.transpose.int, (kt, -2, -1))


def _attn_mask(graph, terms: list[_Term], dtype: torch.dtype):
    """One SDPA mask equal to the matched terms (module docstring)."""
    if not terms:
        return None
    if len(terms) == 1 and terms[0].cond is not None and terms[0].value == -math.inf:
        cond = terms[0].cond
        return _call(graph, aten.logical_not.default, (cond,)) if terms[0].fill_when else cond
    total = None
    for term in terms:
        if term.cond is not None:
            filled = term.value * term.factor
            args = (term.cond, filled, 0.0) if term.fill_when else (term.cond, 0.0, filled)
            node = _call(graph, aten.where.Scalar, args)
        else:
            node = term.tensor
            if term.factor != 1.0:
                node = _call(graph, aten.mul.Tensor, (node, term.factor))
        if tensor_meta(node).dtype != dtype:
            node = _call(graph, aten._to_copy.default, (node,), {"dtype": dtype})
        total = node if total is None else _call(graph, aten.add.Tensor, (total, node))
    return total


def _call(graph, target, args, kwargs=None) -> torch.fx.Node:
    node = graph.call_function(target, args, kwargs or {})
    infer_meta(node)
    return node


def _depends_on(node: torch.fx.Node, target: torch.fx.Node) -> bool:
    """Whether ``target`` is an ancestor of ``node`` (only nodes after ``target`` are visited)."""
    order = {n: i for i, n in enumerate(target.graph.nodes)}
    limit, stack, seen = order[target], [node], set()
    while stack:
        cur = stack.pop()
        if cur is target:
            return True
        if cur in seen or order.get(cur, -1) < limit:
            continue
        seen.add(cur)
        stack.extend(cur.all_input_nodes)
    return False


def _erase_dead(graph: torch.fx.Graph, nodes: list[torch.fx.Node]) -> None:
    """Erase the given nodes, last first, with their shape assertions, once nothing else uses them."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in sorted({n for n in nodes if n in order}, key=order.get, reverse=True):
        if node.op != "call_function":
            continue
        for user in list(node.users):
            if is_op(user, *_ASSERTS) and not user.users:
                graph.erase_node(user)
        if not node.users:
            graph.erase_node(node)
