"""Fuse the bias Add before an (erf) GELU into ``com.microsoft`` BiasGelu.

    y = 0.5·x·(1 + erf(x/√2))   ==>   y = Gelu(x)                 (exports below opset 20)
    y = Gelu(x·W + b)           ==>   y = BiasGelu(x·W, b)

The MatMul stays a MatMul (ORT's GEMM); the bias add and the activation become one pass over
the activations. Not in the CPU pipeline: there ORT's BiasGelu kernel measured slower than a
Gemm that adds the bias in its output loop followed by the vectorised Gelu (``fold_bias_add``).
The tanh form is ``fuse_fast_gelu``. Rules: onnxscript's ORT fusions.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult


class FuseBiasGelu(OnnxPass):
    """MatMul + bias + GELU ==> MatMul + com.microsoft BiasGelu."""

    name = "fuse_bias_gelu"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        common_passes.ShapeInferencePass()(model)  # the bias rule checks the bias is 1-D over the last axis
        erf_gelu = fuse_erfgelu(model)  # exports below opset 20 spell Gelu as 0.5·x·(1 + erf(x/√2))
        bias = fuse_bias_gelu(model)
        stats = {"erf_gelu": erf_gelu, "bias_gelu": bias}
        return PassResult(erf_gelu + bias > 0, stats)
