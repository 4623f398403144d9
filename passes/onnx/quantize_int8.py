"""Quantise MatMul weights to int8, activations per call (``--precision int8``, CPU provider).

    y = x·W            x: float activations, W: constant float weights (K, N)
        ==>  x_q, s_x, z_x = DynamicQuantizeLinear(x)          (uint8, one scale per call)
             y = MatMulInteger(x_q, W_q, z_x) · (s_x · s_W)     W_q int8, s_W one scale per column

with x ≈ s_x·(x_q − z_x) and W ≈ s_W·W_q, so y ≈ s_x·s_W·Σ_k (x_q − z_x)·W_q. ONNX Runtime
fuses the chain into DynamicQuantizeMatMul, whose integer dot products use the CPU's VNNI
instructions: about 4× the multiply-adds per cycle of fp32. On an x86 CPU without VNNI the same
kernel sums pairs of uint8×int8 products in int16, which saturates for full-range weights (a 23%
error on GPT-2); there the weights get 7 bits (``reduce_range``), which cannot saturate. A
full-range artifact loaded on such a CPU runs its fp32 graph instead (``accelc.load`` says so).

The rewrite is ONNX Runtime's own dynamic quantiser (``onnxruntime.quantization``), limited to
MatMuls whose second input is a constant (``MatMulConstBOnly``): the Q·Kᵀ and P·V products of an
unfused attention have two activations and stay float. Gemm is quantised the same way, its bias
added after. A weight the exporter writes as ``Transpose(W)`` (GPT-2's LM head, tied to the
token embedding) is stored transposed first, so that the quantiser sees a constant. Convolutions
stay float: dynamic quantisation of Conv (ConvInteger) has no fast CPU kernel. The optimiser
checks the result against the fp32 reference with the int8 tolerance (a few percent of the
output's scale) and rolls it back beyond that. Models over 2 GB are refused for now: the
quantiser would need them written with external data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np
import onnx
import onnx_ir as ir

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, count_ops, cpu_has_int8_dot_products

from . import int8_sensitivity as sensitivity

log = logging.getLogger(__name__)

# The quantiser's MatMul handler also takes Gemm (rewritten as MatMulInteger plus the bias Add).
QUANTISED_OPS = ["MatMul", "Gemm"]


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


class _FromTheQuantiser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or "quantization" not in record.pathname


@contextlib.contextmanager
def _quantiser_advice_dropped():
    """The quantiser logs advice on the root logger ("consider running pre-processing") at every
    call; it is about static quantisation, not this pass, so it is dropped rather than shown."""
    root, drop = logging.getLogger(), _FromTheQuantiser()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _quantisable(model: ir.Model) -> int:
    return sum(1 for node in model.graph.all_nodes()
               if node.op_type in QUANTISED_OPS and node.domain == "" and node.inputs[1] is not None
               and node.inputs[1].const_value is not None)


class QuantizeInt8(OnnxPass):
    """MatMul/Gemm(x, W) ==> DynamicQuantizeLinear + MatMulInteger (int8 weights, precision int8 only)."""

    name = "quantize_int8"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if ctx.precision != "int8":
            return PassResult(False, {})
        transposed = _store_transposed_weights(model)
        candidates = _quantisable(model)
        if candidates == 0:
            ctx.refuse("graph", "no MatMul or Gemm with a constant weight to quantise")
            return PassResult(False, {"quantised": 0})
        from onnxruntime.quantization import QuantType, quantize_dynamic

        proto = ir.serde.serialize_model(model)
        if proto.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            ctx.refuse("graph", "the model is over 2 GB; int8 quantisation of external-data models is not supported yet")
            return PassResult(False, {"quantised": 0})
        # Shapes recorded by earlier passes can disagree with what the quantiser re-infers
        # (dynamic batch); it only needs the ones it infers itself.
        del proto.graph.value_info[:]
        # Without VNNI, ONNX Runtime's uint8×int8 kernel saturates on full-range weights; 7 bits
        # cannot saturate and cost about twice the error. The artifact records which it got.
        weight_bits = 8 if cpu_has_int8_dot_products() else 7
        kept: dict[str, float] = {}
        error = None
        with tempfile.TemporaryDirectory(prefix="accelc-int8-") as folder, _quantiser_advice_dropped():
            src = os.path.join(folder, "fp32.onnx")
            onnx.save(proto, src)

            def quantised_without(exclude) -> str:
                dst = os.path.join(folder, f"int8-{len(exclude)}.onnx")
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=weight_bits == 7,
                                 op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=_with_gemm_names(exclude),
                                 extra_options={
                                     "MatMulConstBOnly": True,
                                     # Outputs of contrib ops (MultiHeadAttention) have no inferred type.
                                     "DefaultTensorType": onnx.TensorProto.FLOAT,
                                 })
                return dst

            dst = quantised_without([])
            if ctx.error_budget is not None:
                dst, kept, error = _within_budget(proto, src, dst, quantised_without, folder, weight_bits, ctx)
                if dst is None:
                    return PassResult(False, {"candidates": candidates, "quantised": 0})
            new = ir.serde.deserialize_model(onnx.load(dst))
        quantised = count_ops(new, "MatMulInteger", "DynamicQuantizeMatMul")
        # Replace the graph in place: the optimiser holds `model`, not a return value.
        model.graph = new.graph
        model.opset_imports.update(new.opset_imports)
        stats = {"candidates": candidates, "quantised": quantised, "weights_stored_transposed": transposed,
                 "weight_bits": weight_bits}
        if error is not None:
            stats |= {"kept_fp32": len(kept), "kept_fp32_layers": list(kept), "error_on_example": round(error, 5)}
        return PassResult(quantised > 0, stats)


def _with_gemm_names(names) -> list[str]:
    """Node names as the quantiser matches them: it first rewrites Gemm as a MatMul named
    ``<name>_MatMul`` (plus the bias Add), so a Gemm is excluded under both names."""
    return sorted({n for name in names for n in (name, f"{name}_MatMul")})


def _within_budget(proto, src: str, dst: str, quantised_without, folder: str, weight_bits: int, ctx):
    """(the int8 model's path, the layers kept in fp32 with their own errors, its error on the
    example) within ``ctx.error_budget``: the layers whose own int8 error is largest stay fp32,
    1, 2, 4, … of them, until the whole model's error is within. (None, …) when no half of the
    layers does it, or the example cannot be fed (the pass then refuses)."""
    feeds = sensitivity.feeds_for(proto, ctx.example_inputs)
    if feeds is None:
        ctx.refuse("graph", "the export does not take the example's inputs one for one: its int8 error cannot be "
                            "measured, so it is not quantised under an error budget")
        return None, {}, None
    reference = sensitivity.run(src, feeds)
    error = sensitivity.relative_error(sensitivity.run(dst, feeds), reference)
    if error <= ctx.error_budget:
        return dst, {}, error
    errors = sensitivity.layer_errors(proto, folder, feeds, weight_bits)
    ranked = sensitivity.ranked(proto, errors)
    first, count = error, 1
    while count <= len(ranked) // 2:
        if count > 4 and error > 0.75 * first:  # error spread over every layer: more fp32 will not do
            ctx.refuse("graph", f"int8 error {error:.2g} on the example is above the budget {ctx.error_budget:g}, and "
                                f"keeping the {count // 2} most sensitive of {len(ranked)} layers in fp32 did not bring "
                                f"it down (it was {first:.2g}): the error is spread over the layers")
            return None, {}, error
        kept = {name: errors[name] for name in ranked[:count]}
        dst = quantised_without(list(kept))
        error = sensitivity.relative_error(sensitivity.run(dst, feeds), reference)
        log.debug("quantize_int8: %d of %d layers kept fp32: error %.3g (budget %g)", count, len(ranked), error,
                  ctx.error_budget)
        if error <= ctx.error_budget:
            for name, own in kept.items():
                ctx.refuse(name, f"kept in fp32: one of the {count} layers most likely to carry int8 error to the "
                                 f"output (its own: {own:.2g}); with every layer int8 the model's error was above the "
                                 f"budget {ctx.error_budget:g}")
            return dst, kept, error
        count *= 2
    ctx.refuse("graph", f"int8 error {error:.2g} on the example is above the budget {ctx.error_budget:g} even with "
                        f"the {count // 2} most sensitive of {len(ranked)} layers kept in fp32")
    return None, {}, error
