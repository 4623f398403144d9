"""Fuse the bias Add before GELU into ``com.microsoft`` BiasGelu (erf GELU) or FastGelu (tanh).

    y = Gelu(x·W + b)   ==>   y = BiasGelu(x·W, b)
    y = 0.5·h·(1 + tanh(√(2/π)·(h + 0.044715·h³)))   ==>   y = FastGelu(h)

The MatMul stays a MatMul (ORT's GEMM); the bias add and the activation become one pass over
the activations. The tanh form (GPT-2's "gelu_new", eight elementwise ops) becomes one FastGelu
kernel; its bias add stays separate. Rules: onnxscript's ORT fusions.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult


class FuseBiasGelu(OnnxPass):
    """MatMul + bias + GELU ==> MatMul + com.microsoft BiasGelu / FastGelu."""

    name = "fuse_bias_gelu"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        common_passes.ShapeInferencePass()(model)  # the bias rule checks the bias is 1-D over the last axis
        erf_gelu = fuse_erfgelu(model)  # exports below opset 20 spell Gelu as 0.5·x·(1 + erf(x/√2))
        tanh_gelu = fuse_gelu(model)
        bias = fuse_bias_gelu(model)
        stats = {"erf_gelu": erf_gelu, "fast_gelu": tanh_gelu, "bias_gelu": bias}
        return PassResult(erf_gelu + tanh_gelu + bias > 0, stats)
