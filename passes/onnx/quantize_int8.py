"""Quantise MatMul/Gemm weights to int8, activations per call (``--precision int8``, CPU provider).

    y = x·W (+ b)        x: float activations, W: constant float weights (K, N), b: constant (N,)
        ==>  y = DynamicQuantizeMatMul(x, W_q, s_W, bias=b)                  (com.microsoft)
    several layers reading one x (Q, K and V's projections) quantise it once:
        ==>  x_q, s_x, z_x = DynamicQuantizeLinear(x)
             y_i = MatMulIntegerToFloat(x_q, W_q_i, s_x, s_W_i, z_x, bias=b_i)

    W_q = round(W / s_W) ∈ [−q, q] int8,   s_W[n] = max_k |W[k, n]| / q    (one scale per column)
    in the op, per call: x ≈ s_x·(x_q − z_x), x_q uint8 over [min(x, 0), max(x, 0)]
    y ≈ s_x·s_W·Σ_k (x_q − z_x)·W_q + b

ONNX Runtime's kernel runs the integer dot products on the CPU's VNNI (or AMX) instructions:
about 4× the multiply-adds per cycle of fp32. On an x86 CPU without VNNI it sums pairs of
uint8×int8 products in int16, which saturates for full-range weights (a 23% error on GPT-2);
there the weights get q = 64 instead of 127 (``reduce_range``), which cannot saturate. A
full-range artifact loaded on such a CPU runs its fp32 graph instead (``accelc.load`` says so).

Only MatMuls whose second input is a constant are quantised: the Q·Kᵀ and P·V products of an
unfused attention have two activations and stay float. A bias Add right after a MatMul, and a
Gemm's C, become the op's bias. A weight the exporter writes as ``Transpose(W)`` (GPT-2's LM head,
tied to the token embedding) is stored transposed first. Convolutions stay float: dynamic
quantisation of Conv (ConvInteger) has no fast CPU kernel. The onnx stage checks the result
against the fp32 reference with the int8 tolerance (a few percent of the output's scale) and
rolls it back beyond that. Under an error budget (``precision="auto"``) the layers most likely
to carry int8 error to the output stay fp32 (:mod:`.int8_sensitivity`). Models over 2 GB are
refused for now: measuring their error needs them written with external data.

The rewrite is the graph ONNX Runtime's own ``quantize_dynamic`` arrives at once its session has
fused the quantiser's DynamicQuantizeLinear + MatMulInteger + Mul (+ Add) chains, with the same
weights.
It is written here because that quantiser scales per-channel weights one column at a time in
Python: 5.9 s of its 7.1 s on BERT-base, paid again at every try of an error budget, where
whole matrices in numpy take a fraction of a second.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, bias_length, cpu_has_int8_dot_products

from . import int8_sensitivity as sensitivity

log = logging.getLogger(__name__)


def _store_transposed_weights(model: ir.Model) -> int:
    """MatMul(x, Transpose(W)) with W a 2-D initializer ==> MatMul(x, Wᵀ) with Wᵀ an initializer."""
    stored: dict[ir.Node, ir.Value] = {}  # per Transpose: MatMuls reading the same one share its copy
    for node in list(model.graph):
        if node.op_type != "MatMul" or node.domain != "" or node.inputs[1] is None:
            continue
        transpose = node.inputs[1].producer()
        if transpose is None or transpose.op_type != "Transpose" or transpose.domain != "":
            continue
        source = transpose.inputs[0]
        perm = transpose.attributes.get_ints("perm", [1, 0])
        if source.const_value is None or len(source.const_value.shape) != 2 or list(perm) != [1, 0]:
            continue
        weight = stored.get(transpose)
        if weight is None:
            weight = ir.Value(name=f"{transpose.outputs[0].name}_stored",
                              const_value=ir.tensor(np.ascontiguousarray(source.const_value.numpy().T)))
            model.graph.register_initializer(weight)
            stored[transpose] = weight
        node.replace_input_with(1, weight)
        if not transpose.outputs[0].uses():
            model.graph.remove(transpose, safe=True)
    return len(stored)


MICROSOFT = "com.microsoft"
# Past this the model cannot be serialised in one piece for the error measurement.
MAX_BYTES = onnx.checker.MAXIMUM_PROTOBUF


def quantisable_layers(model: ir.Model) -> list[ir.Node]:
    """The top graph's MatMul/Gemm nodes with a constant 2-D float weight (a Gemm only as x·W(ᵀ)
    + b: no alpha/beta scaling, no transposed x, C absent or a bias over the output features)."""
    layers = []
    for node in model.graph:
        if node.domain != "" or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        const = None if weight is None else weight.const_value
        if const is None or len(const.shape) != 2 or const.dtype != ir.DataType.FLOAT:
            continue
        if node.op_type == "Gemm":
            attrs = node.attributes
            if attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_int("transA", 0):
                continue
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            columns = const.shape[0] if attrs.get_int("transB", 0) else const.shape[1]
            if bias is not None and (attrs.get_float("beta", 1.0) != 1.0 or _bias_of(bias, columns) is None):
                continue
        layers.append(node)
    for index, node in enumerate(layers):
        node.name = node.name or f"quantize_int8_layer_{index}"  # the budget excludes layers by name
    return layers


def _bias_of(value: ir.Value | None, columns: int) -> np.ndarray | None:
    """``value`` as a (columns,) float bias, when it is a constant that varies along the last axis only."""
    if bias_length(value) != columns or value.const_value.dtype != ir.DataType.FLOAT:
        return None
    return value.const_value.numpy().reshape(-1)


def _absorbed_bias(node: ir.Node, columns: int) -> tuple[ir.Node | None, np.ndarray | None]:
    """(the Add, its bias) when ``node``'s output feeds only an Add of a constant bias."""
    out = node.outputs[0]
    uses = list(out.uses())
    if out.is_graph_output() or len(uses) != 1:
        return None, None
    add, _ = uses[0]
    if add.op_type != "Add" or add.domain != "" or len(add.inputs) != 2:
        return None, None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    bias = _bias_of(other, columns)
    return (add, bias) if bias is not None else (None, None)


def quantise(model: ir.Model, weight_bits: int, exclude: frozenset = frozenset()) -> int:
    """Rewrite every quantisable layer of ``model`` not named in ``exclude``, in place; returns how
    many. A weight shared by several layers is quantised once, and so is an activation read by
    several (Q, K and V's projections): one DynamicQuantizeLinear feeds their MatMulIntegerToFloat."""
    qmax = sensitivity.weight_qmax(weight_bits)
    layers = [node for node in quantisable_layers(model) if node.name not in exclude]
    readers = Counter(id(node.inputs[0]) for node in layers)
    weights: dict[tuple[int, bool], tuple[ir.Value, ir.Value]] = {}
    activations: dict[int, tuple[ir.Value, ...]] = {}
    for node in layers:
        w_q, w_scale = _int8_weight(model, node, qmax, weights)
        columns = w_q.const_value.shape[1]
        if node.op_type == "Gemm":
            add, bias = None, _bias_of(node.inputs[2] if len(node.inputs) > 2 else None, columns)
        else:
            add, bias = _absorbed_bias(node, columns)
        if bias is not None:
            bias = ir.Value(name=f"{node.name}_int8_bias", const_value=ir.tensor(bias.astype(np.float32)))
            model.graph.register_initializer(bias)
        x = node.inputs[0]
        if readers[id(x)] == 1:
            new = ir.Node(MICROSOFT, "DynamicQuantizeMatMul", [x, w_q, w_scale, *([None, bias] if bias else [])],
                          name=f"{node.name}_int8")
        else:
            if id(x) not in activations:  # before the first of its readers, which come in graph order
                quantise_x = ir.Node("", "DynamicQuantizeLinear", [x], num_outputs=3, name=f"{node.name}_int8_input")
                model.graph.insert_before(node, quantise_x)
                activations[id(x)] = quantise_x.outputs
            x_q, x_scale, x_zero = activations[id(x)]
            new = ir.Node(MICROSOFT, "MatMulIntegerToFloat",
                          [x_q, w_q, x_scale, w_scale, x_zero, *([None, bias] if bias else [])], name=f"{node.name}_int8")
        replaced = [node] + ([add] if add is not None else [])
        out = replaced[-1].outputs[0]
        if out.type is not None:  # unknown after a pass that dropped the shapes (a contrib op's output)
            new.outputs[0].type, new.outputs[0].shape = out.type, out.shape
        ir.convenience.replace_nodes_and_values(model.graph, replaced[-1], replaced, [new], [out], [new.outputs[0]])
    if layers:
        model.opset_imports.setdefault(MICROSOFT, 1)
    return len(layers)


def _int8_weight(model: ir.Model, node: ir.Node, qmax: int, stored: dict) -> tuple[ir.Value, ir.Value]:
    """(W_q, s_W) of ``node``'s weight as (K, N) initializers, made once per weight."""
    transposed = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
    weight = node.inputs[1]
    key = (id(weight), transposed)
    if key not in stored:
        w = weight.const_value.numpy().astype(np.float32)
        w_q, scale = sensitivity.quantise_columns(w.T if transposed else w, qmax)
        suffix = "_t" if transposed else ""
        stored[key] = (ir.Value(name=f"{weight.name}{suffix}_int8", const_value=ir.tensor(w_q)),
                       ir.Value(name=f"{weight.name}{suffix}_int8_scale", const_value=ir.tensor(scale)))
        for value in stored[key]:
            model.graph.register_initializer(value)
    return stored[key]


class QuantizeInt8(OnnxPass):
    """MatMul/Gemm(x, W) (+ b) ==> DynamicQuantizeMatMul(x, W_q, s_W, b) (precision int8 only)."""

    name = "quantize_int8"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if ctx.precision != "int8":
            return PassResult(False, {})
        transposed = _store_transposed_weights(model)
        candidates = len(quantisable_layers(model))
        if candidates == 0:
            ctx.refuse("graph", "no MatMul or Gemm with a constant weight to quantise")
            return PassResult(False, {"quantised": 0})
        if sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None) > MAX_BYTES:
            ctx.refuse("graph", "the model is over 2 GB; int8 quantisation of external-data models is not supported yet")
            return PassResult(False, {"quantised": 0})
        # Without VNNI, ONNX Runtime's uint8×int8 kernel saturates on full-range weights; 7 bits
        # cannot saturate and cost about twice the error. The artifact records which it got.
        weight_bits = 8 if cpu_has_int8_dot_products() else 7
        kept: dict[str, float] = {}
        error = None
        if ctx.error_budget is not None:
            kept, error = _within_budget(model, weight_bits, ctx)
            if kept is None:
                return PassResult(False, {"candidates": candidates, "quantised": 0})
        quantised = quantise(model, weight_bits, frozenset(kept))
        stats = {"candidates": candidates, "quantised": quantised, "weights_stored_transposed": transposed,
                 "weight_bits": weight_bits}
        if error is not None:
            stats |= {"kept_fp32": len(kept), "kept_fp32_layers": list(kept), "error_on_example": round(error, 5)}
        return PassResult(quantised > 0, stats)


def _quantised_bytes(model: ir.Model, weight_bits: int, exclude) -> bytes:
    """A quantised copy of ``model`` (tensors shared), serialised for a session."""
    copy = model.clone()
    quantise(copy, weight_bits, frozenset(exclude))
    return ir.serde.serialize_model(copy).SerializeToString()


def _within_budget(model: ir.Model, weight_bits: int, ctx) -> tuple[dict[str, float] | None, float | None]:
    """(the layers to keep in fp32, with their own errors; the model's int8 error on the example)
    within ``ctx.error_budget``: the layers whose own int8 error is largest stay fp32, 1, 2, 4, …
    of them, until the whole model's error is within. (None, …) when no half of the layers does
    it, or the example cannot be fed (the pass then refuses)."""
    proto = ir.serde.serialize_model(model)
    feeds = sensitivity.feeds_for(proto, ctx.example_inputs)
    if feeds is None:
        ctx.refuse("graph", "the export does not take the example's inputs one for one: its int8 error cannot be "
                            "measured, so it is not quantised under an error budget")
        return None, None
    reference = sensitivity.run(proto.SerializeToString(), feeds)

    def error_without(exclude) -> float:
        return sensitivity.relative_error(sensitivity.run(_quantised_bytes(model, weight_bits, exclude), feeds),
                                          reference)

    error = error_without([])
    if error <= ctx.error_budget:
        return {}, error
    errors = sensitivity.layer_errors(proto, feeds, weight_bits, {node.name for node in quantisable_layers(model)})
    ranked = sensitivity.ranked(proto, errors)
    first, count = error, 1
    while count <= len(ranked) // 2:
        if count > 4 and error > 0.75 * first:  # error spread over every layer: more fp32 will not do
            ctx.refuse("graph", f"int8 error {error:.2g} on the example is above the budget {ctx.error_budget:g}, and "
                                f"keeping the {count // 2} most sensitive of {len(ranked)} layers in fp32 did not bring "
                                f"it down (it was {first:.2g}): the error is spread over the layers")
            return None, error
        kept = {name: errors[name] for name in ranked[:count]}
        error = error_without(kept)
        log.debug("quantize_int8: %d of %d layers kept fp32: error %.3g (budget %g)", count, len(ranked), error,
                  ctx.error_budget)
        if error <= ctx.error_budget:
            for name, own in kept.items():
                ctx.refuse(name, f"kept in fp32: one of the {count} layers most likely to carry int8 error to the "
                                 f"output (its own: {own:.2g}); with every layer int8 the model's error was above the "
                                 f"budget {ctx.error_budget:g}")
            return kept, error
        count *= 2
    ctx.refuse("graph", f"int8 error {error:.2g} on the example is above the budget {ctx.error_budget:g} even with "
                        f"the {count // 2} most sensitive of {len(ranked)} layers kept in fp32")
    return None, error
