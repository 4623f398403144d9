"""Convert float32 weights and compute to float16 (``--precision fp16``), keeping I/O in float32.

    y = f(x; W)   ==>   y = Cast₃₂(f₁₆(Cast₁₆(x); W₁₆))

Inputs and outputs keep their types (callers see no change); ops whose float16 form loses too
much (reductions and normalisations: LayerNormalization, SkipLayerNormalization, Softmax outside
fused attention, Pow, ReduceMean, Exp, Log, Range, and shape arithmetic) stay float32 with Casts
at their edges. The conversion is ONNX Runtime's own float16 converter, run on the serialised
model; the optimiser then verifies it against the fp32 reference with half-precision tolerances.
Only on CUDA: the CPU provider runs most float16 kernels slower than float32, by upcasting.
"""

from __future__ import annotations

import onnx_ir as ir

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult

KEEP_FP32 = [
    "LayerNormalization", "SkipLayerNormalization", "Softmax", "Pow", "ReduceMean", "ReduceSum", "Exp",
    "Log", "Range", "CumSum", "Sqrt", "Div", "Erf", "TopK", "NonMaxSuppression", "Resize", "Upsample",
]


class ConvertFp16(OnnxPass):
    """fp32 ==> fp16 weights and compute, fp32 I/O and sensitive ops kept (precision fp16 only)."""

    name = "convert_fp16"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if ctx.precision != "fp16":
            return PassResult(False, {})
        if ctx.device.type == "cpu":
            ctx.refuse("graph", "fp16 on the CPU provider upcasts most kernels to fp32 (slower); kept fp32")
            return PassResult(False, {})
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = ir.serde.serialize_model(model)
        before = sum(1 for n in proto.graph.node)
        converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=KEEP_FP32, disable_shape_infer=True)
        _drop_repeated_casts(converted)
        new = ir.serde.deserialize_model(converted)
        # Replace the graph in place: the optimiser holds `model`, not a return value.
        model.graph = new.graph
        model.opset_imports.update(new.opset_imports)
        casts = sum(1 for n in converted.graph.node if n.op_type == "Cast") - sum(1 for n in proto.graph.node if n.op_type == "Cast")
        return PassResult(True, {"nodes_before": before, "casts_added": casts})


def _drop_repeated_casts(proto) -> None:
    """Remove the second copy of a Cast the converter wrote twice under one output name.

    ORT's converter fences a value once per fenced consumer; when two fenced ops read the same
    value it emits two identical Casts with the same output name, which is not a valid graph.
    Identical (same input, same target type) copies are dropped; anything else is left for the
    deserialiser to reject, and the optimiser then rolls the pass back.
    """
    seen: dict[str, tuple] = {}
    keep = []
    for node in proto.graph.node:
        key = (node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute))
        if node.op_type == "Cast" and len(node.output) == 1 and seen.get(node.output[0]) == key:
            continue
        for out in node.output:
            seen.setdefault(out, key)
        keep.append(node)
    if len(keep) != len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
