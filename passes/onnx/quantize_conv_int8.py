"""Quantise convolutions to int8, activation ranges calibrated on the user's inputs (``--precision
int8`` with ``--calibration``, CPU provider).

    y = Conv(x, W, b)
        ==>  y = DQ(Q(Conv(DQ(Q(x; s_x, z_x)), DQ(W_q; s_W), b); s_y, z_y))

    Q(v; s, z) = clip(round(v / s) + z, 0, 255)   uint8, s and z fixed at build from min(v, 0) and
    DQ(q; s, z) = s·(q − z)                         max(v, 0) over the calibration inputs
    W_q = round(W / s_W) int8,   s_W[c] = max|W[c]| / 127   (one scale per output channel c)

ONNX Runtime fuses each DQ → Conv → Q group into QLinearConv, whose integer dot products run on
the CPU's VNNI (or AMX) instructions. The ops downstream of a convolution that ORT also runs on
uint8 tensors (Relu, Clip, pooling, Add, Concat, reshapes; :data:`INT8_FRIENDLY`) are
quantised with it, so that activations stay uint8 from one convolution to the next instead of
going back to fp32 between them: on the samples this route is as fast as ORT's static
quantisation of every op (`benchmarks/results/int8.md`). Without VNNI the weights get 7 bits, as in
quantize_int8, so that the int16 pair sums cannot saturate.

Unlike quantize_int8, which quantises a MatMul's input anew at every call, this fixes every
convolution's input range at build: an input whose activations leave that range is clipped,
and its answer is wrong by an amount no check at call time sees. So the ranges come only from
inputs the user gives as representative (``accelerate(..., calibration=[...])``, ``--calibration``;
with the example), never from accelc's seeded variants, which are noise around the example's
mean and spread and activate an image network unlike real images. Without them the pass leaves
the convolutions in fp32 and says how to give them. MatMul and Gemm are left to quantize_int8.

The rewrite is ONNX Runtime's static quantiser (``quantize_static``: QDQ format, MinMax
calibration) limited to that region.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import onnx
import onnx_ir as ir

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult, cpu_has_int8_dot_products

from . import int8_sensitivity as sensitivity


# Ops ONNX Runtime runs on uint8 tensors between QDQ pairs (its QDQ selectors), taken into the
# int8 region when a convolution's output reaches them. MatMul and Gemm are not: quantize_int8
# quantises their activations per call.
INT8_FRIENDLY = {"Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Concat", "Flatten", "Reshape",
                 "Transpose", "Squeeze", "Unsqueeze", "Resize", "Pad", "Slice", "Split"}

HOW = "pass calibration inputs like the real ones: accelerate(..., calibration=[inputs, ...]) or --calibration FILE"


def float_convolutions(model: ir.Model) -> list[ir.Node]:
    """Conv nodes of the top graph with a constant float weight (not already fed by a DequantizeLinear)."""
    convs = []
    for node in model.graph:
        if node.op_type != "Conv" or node.domain != "" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        const = node.inputs[1].const_value
        if const is not None and const.dtype == ir.DataType.FLOAT:
            convs.append(node)
    return convs


def int8_region(model: ir.Model, convs: list[ir.Node]) -> list[ir.Node]:
    """``convs`` and the :data:`INT8_FRIENDLY` nodes whose every float input comes from the region
    or is a constant, in graph order. ResNet's residual Add (both branches convolutions) joins;
    a transformer's residual Add, whose other input is an attention or MLP output, does not: the
    residual stream of ViT, after its patch convolution, stays fp32."""
    region: set[int] = {id(node) for node in convs}
    for node in model.graph:  # producers come first: a node's inputs are decided before it
        if id(node) in region or node.domain != "" or node.op_type not in INT8_FRIENDLY:
            continue
        data = [v for v in node.inputs if v is not None and v.dtype in (None, ir.DataType.FLOAT)]
        inside = [v for v in data if v.producer() is not None and id(v.producer()) in region]
        if inside and all(v in inside or v.const_value is not None for v in data):
            region.add(id(node))
    return [node for node in model.graph if id(node) in region]


class _Sets:
    """The calibration feeds, one dict per input set, as ONNX Runtime's quantiser reads them."""

    def __init__(self, feeds: list[dict]):
        self._sets = iter(feeds)

    def get_next(self):
        return next(self._sets, None)


class _FromTheQuantiser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or "quantization" not in record.pathname


@contextlib.contextmanager
def _quantiser_advice_dropped():
    """The quantiser logs advice on the root logger ("consider running pre-processing") at every
    call: the graph stage has folded what that pre-processing would, so it is dropped."""
    root, drop = logging.getLogger(), _FromTheQuantiser()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class QuantizeConvInt8(OnnxPass):
    """Conv(x, W, b) (and the int8-friendly ops after it) ==> QDQ around them, calibrated (QLinearConv
    in ORT); precision int8 with calibration inputs only."""

    name = "quantize_conv_int8"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        if ctx.precision != "int8":
            return PassResult(False, {})
        float_convs = float_convolutions(model)
        convs = len(float_convs)
        if convs == 0:
            if ctx.calibration_inputs:
                ctx.refuse("graph", "no float convolution to quantise: the calibration inputs are not used")
            return PassResult(False, {"convolutions": 0, "quantised": 0})
        if not ctx.calibration_inputs:
            ctx.refuse("graph", f"{convs} convolutions stay fp32: int8 convolutions need activation ranges from "
                                f"inputs like the real ones; {HOW}")
            return PassResult(False, {"convolutions": convs, "quantised": 0})
        region = int8_region(model, float_convs)
        for index, node in enumerate(region):
            node.name = node.name or f"quantize_conv_int8_node_{index}"  # the quantiser takes nodes by name
        proto = ir.serde.serialize_model(model)
        if proto.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
            ctx.refuse("graph", "the model is over 2 GB; int8 quantisation of external-data models is not supported yet")
            return PassResult(False, {"convolutions": convs, "quantised": 0})
        feeds = [sensitivity.feeds_for(proto, inputs) for inputs in (ctx.example_inputs, *ctx.calibration_inputs)]
        if any(f is None for f in feeds):
            ctx.refuse("graph", "the export does not take the inputs one for one, so it cannot be calibrated")
            return PassResult(False, {"convolutions": convs, "quantised": 0})
        del proto.graph.value_info[:]  # the quantiser infers the shapes it needs itself
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        weight_bits = 8 if cpu_has_int8_dot_products() else 7
        with tempfile.TemporaryDirectory(prefix="accelc-int8-conv-") as folder, _quantiser_advice_dropped():
            src, dst = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
            onnx.save(proto, src)
            quantize_static(src, dst, _Sets(feeds), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=sorted({n.op_type for n in region}),
                            nodes_to_quantize=[n.name for n in region], per_channel=True,
                            reduce_range=weight_bits == 7, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            new = ir.serde.deserialize_model(onnx.load(dst))
        quantised = convs - len(float_convolutions(new))
        # Replace the graph in place: the manager holds `model`, not a return value.
        model.graph = new.graph
        model.opset_imports.update(new.opset_imports)
        return PassResult(quantised > 0, {"convolutions": convs, "quantised": quantised, "int8_region": len(region),
                                          "weight_bits": weight_bits, "calibration_sets": len(feeds)})
