"""Skip the key blocks a constant attention mask hides: one MultiHeadAttention per query chunk.

    y = MHA(q, k, v, attention_bias=M)                       M: (1|B, 1|H, Sq, Skv), fixed
        ==>  y = Concat_c( MHA(q[:, Q_c], k[:, K_c], v[:, K_c], attention_bias=M[:, :, Q_c, K_c]) )

Q_c = [lo, hi) is a chunk of query rows and K_c = [first, last] the keys any of those rows can
see. Every key outside K_c has bias -inf (or the dtype's minimum, as transformers writes it), so
softmax gives it weight exp(-inf) = 0: dropping it changes neither the softmax denominator nor
the weighted sum of values, and the result is the same to the bit. For a causal mask chunk c of
n sees keys [0, hi), so the chunks compute (n + 1) / 2n of the S×S scores: 5/8 at n = 4.

Why it pays on the CPU provider: ORT's CPU MultiHeadAttention runs a mask through its unfused
path, which materialises the whole (B, H, Sq, Skv) score tensor (GPT-2 at seq 512: 17% of the
model's time). On GPT-2 at seq 512 (2 cores) four chunks ran the whole model 1.07–1.14× faster
than the unsplit one, two chunks 1.10×, eight 1.05× (per-chunk overhead): chunks are about
``ROWS_PER_CHUNK`` query rows, at most 8, and a sequence under 192 is left whole. Without a
projection bias, k and v are reshaped to heads-first (B, H, S, D) once, which MHA reads as they
are; otherwise each chunk's MHA would transpose its own key range (one GPT-2 s512 attention
in benchmarks/bench_ort_causal.py: 10% faster, same bits).

The query chunks and the key range each one reads are decided when the pass runs, from the
sequence length, so an export with a dynamic sequence length is left alone (the refusal says
"query length is symbolic"); a dynamic batch is fine. A shape-generic form would compute the
chunk bounds at run time, and with them the mask slices and whether the mask is causal at that
length at all: more nodes per call than the split saves at the lengths where it pays.

The mask must not depend on input data. The exporter writes GPT-2's causal mask as ~40 nodes
computed at run time from ``Shape(input_ids)``, so the pass evaluates that subgraph in ORT
(with feeds of the right shape and zero data, at several batch sizes), requires every batch row
to be the same, and uses the result as a constant. A mask read from an input (BERT's padding mask)
leaves the node alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from accelc.onnx.pass_base import (OnnxPass, OnnxPassContext, PassResult, UniqueNames, evaluate_shape_only, hiding_bias,
                                   masked_attention, plain_self_attention_blocker)

ROWS_PER_CHUNK = 128
MAX_CHUNKS = 8
QUERY_LENGTH_SYMBOLIC = "query length is symbolic: chunks are decided at build time"


def visible_key_range(bias: np.ndarray, lo: int, hi: int) -> tuple[int, int] | None:
    """[first, last + 1) of the keys that query rows [lo, hi) can see; None if a row sees none."""
    visible = bias[..., lo:hi, :] > hiding_bias(bias.dtype)
    rows = visible.reshape(-1, hi - lo, bias.shape[-1]).any(axis=0)
    if not rows.any(axis=1).all():
        return None  # a fully masked row is a uniform softmax over all keys; dropping keys changes it
    seen = rows.any(axis=0).nonzero()[0]
    return int(seen[0]), int(seen[-1]) + 1


def plan_chunks(bias: np.ndarray, rows_per_chunk: int) -> list[tuple[int, int, int, int]] | None:
    """(lo, hi, first_key, end_key) per query chunk, or None when chunking saves under 10%."""
    sq, skv = bias.shape[-2:]
    n = max(1, min(MAX_CHUNKS, round(sq / rows_per_chunk)))
    if n == 1:
        return None
    size = -(-sq // n)
    chunks = []
    for lo in range(0, sq, size):
        hi = min(sq, lo + size)
        keys = visible_key_range(bias, lo, hi)
        if keys is None:
            return None
        chunks.append((lo, hi, *keys))
    kept = sum((hi - lo) * (end - first) for lo, hi, first, end in chunks)
    return chunks if kept < 0.9 * sq * skv else None


def _unsplittable(node: ir.Node) -> str | None:
    """Why this masked MHA can't be split, or None."""
    reason = plain_self_attention_blocker(node)
    if reason is None and not isinstance(node.inputs[0].shape[1], int):
        reason = QUERY_LENGTH_SYMBOLIC
    if reason is None and any(not isinstance(v.shape[1], int) for v in node.inputs[1:3]):
        reason = "key length is symbolic: key ranges are decided at build time"
    return reason


def _replace_with_chunks(model: ir.Model, node: ir.Node, chunks: list[tuple[int, int, int, int]],
                         bias: np.ndarray, mask_key: int, const) -> None:
    """Put Concat(MHA per chunk) in ``node``'s place. ``const(name, array, key)`` makes an
    initializer, shared by every use with the same key (MHAs reading one mask share its blocks)."""
    q, k, v, proj_bias = node.inputs[:4]
    new_nodes, outputs = [], []
    key_axis = 1
    if proj_bias is None:
        # Keys and values go in heads-first (B, H, S, D), transposed once here: given (B, S, H·D),
        # every chunk's MHA would transpose its own key range again. MHA ignores a key/value
        # bias in this layout, hence only without one.
        heads = const("heads", np.array([0, 0, node.attributes["num_heads"].as_int(), -1], np.int64))

        def heads_first(x: ir.Value) -> ir.Value:
            split_heads = ir.Node("", "Reshape", [x, heads])
            transpose = ir.Node("", "Transpose", split_heads.outputs, attributes=[ir.AttrInt64s("perm", [0, 2, 1, 3])])
            new_nodes.extend((split_heads, transpose))
            return transpose.outputs[0]

        k, v, key_axis = heads_first(k), heads_first(v), 2
    axis = const(f"axis{key_axis}", np.array([key_axis], np.int64))
    # One Split for the query rows; a key range that is every key reads k and v as they are:
    # each Slice is a copy (GPT-2 s512, four chunks: Slices were a fifth of attention's time).
    sizes = const("rows", np.array([hi - lo for lo, hi, _, _ in chunks], np.int64))
    q_split = ir.Node("", "Split", [q, sizes], attributes=[ir.AttrInt64("axis", 1)], num_outputs=len(chunks))
    new_nodes.append(q_split)
    skv = bias.shape[-1]
    for (lo, hi, first, end), q_chunk in zip(chunks, q_split.outputs):
        k_chunk, v_chunk = k, v
        if (first, end) != (0, skv):
            at = [const("at", np.array([i], np.int64)) for i in (first, end)]
            slices = [ir.Node("", "Slice", [x, at[0], at[1], axis]) for x in (k, v)]
            new_nodes += slices
            k_chunk, v_chunk = (n.outputs[0] for n in slices)
        mask = const("mask", np.ascontiguousarray(bias[..., lo:hi, first:end]), (mask_key, lo, hi, first, end))
        attention = ir.Node("com.microsoft", "MultiHeadAttention", [q_chunk, k_chunk, v_chunk, proj_bias, None, mask],
                            attributes=list(node.attributes.values()), name=f"{node.name}_rows{lo}_{hi}")
        new_nodes.append(attention)
        outputs.append(attention.outputs[0])
    concat = ir.Node("", "Concat", outputs, attributes=[ir.AttrInt64("axis", 1)], name=f"{node.name}_rows")
    ir.convenience.replace_nodes_and_values(model.graph, node, [node], [*new_nodes, concat], node.outputs[:1], concat.outputs)


class SplitCausalAttention(OnnxPass):
    """MHA with a fixed causal/banded mask ==> one MHA per query chunk over only the keys it sees."""

    name = "split_causal_attention"
    rows_per_chunk = ROWS_PER_CHUNK

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        split = 0
        evaluated: dict[int, np.ndarray | None] = {}
        constants: dict[tuple, ir.Value] = {}
        names = UniqueNames(model)

        def const(name: str, array: np.ndarray, key: tuple | None = None) -> ir.Value:
            key = (name, *(key or (array.tobytes(),)))  # small index constants: keyed by value
            if key not in constants:
                value = ir.Value(name=names(f"{self.name}_{name}"), const_value=ir.tensor(array))
                model.graph.register_initializer(value)
                constants[key] = value
            return constants[key]

        for node in masked_attention(model):
            reason = _unsplittable(node)
            if reason is not None:
                ctx.refuse(node, reason)
                continue
            mask_value = node.inputs[5]
            if id(mask_value) not in evaluated:
                evaluated[id(mask_value)] = evaluate_shape_only(model, mask_value)
            bias = evaluated[id(mask_value)]
            if bias is None:
                ctx.refuse(node, "its attention_bias is not fixed: it reads input data, or changes with the batch size")
                continue
            if bias.ndim != 4 or bias.shape[-2:] != (node.inputs[0].shape[1], node.inputs[1].shape[1]):
                continue
            chunks = plan_chunks(bias, self.rows_per_chunk)
            if chunks is None:
                continue
            _replace_with_chunks(model, node, chunks, bias, id(mask_value), const)
            split += 1
        if split:
            common_passes.RemoveUnusedNodesPass()(model)  # the mask's own subgraph, now unread
        return PassResult(split > 0, {"split": split})
