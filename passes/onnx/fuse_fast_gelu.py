"""Fuse the tanh approximation of GELU into ``com.microsoft`` FastGelu.

    y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   ==>   y = FastGelu(x)
    y = Gelu(x, approximate="tanh")                   ==>   y = FastGelu(x)
    y = FastGelu(h + b)                               ==>   y = FastGelu(h, b)   (b a 1-D constant)

GPT-2's ``gelu_new`` is exported spelled out: Pow, three Muls, two Adds and a Tanh, each a pass
over the activations (and the 0.5 multiplies x, not the bracket, which the rule in onnxscript's
ORT fusions does not match). FastGelu is one pass. Either placement of the 0.5 and either order
of each Add/Mul's operands matches; the constants must equal GELU's within 1e-5 (relative).
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from accelc.onnx.pass_base import OnnxPass, OnnxPassContext, PassResult

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _tanh_bracket(op, x):
    """1 + tanh(√(2/π)·(x + 0.044715·x³))"""
    inner = op.Add(x, op.Mul(op.Pow(x, 3.0), 0.044715))
    return op.Add(op.Tanh(op.Mul(inner, SQRT_2_OVER_PI)), 1.0)


class HalfXTimesBracket(pattern.RewriteRuleClassBase):
    """(0.5·x)·(1 + tanh(…)), the form transformers' NewGELUActivation exports."""

    def pattern(self, op, x):
        return op.Mul(op.Mul(x, 0.5), _tanh_bracket(op, x))

    def rewrite(self, op, x):
        return op.FastGelu(x, _domain="com.microsoft")


class XTimesHalfBracket(pattern.RewriteRuleClassBase):
    """x·(0.5·(1 + tanh(…)))"""

    def pattern(self, op, x):
        return op.Mul(x, op.Mul(_tanh_bracket(op, x), 0.5))

    def rewrite(self, op, x):
        return op.FastGelu(x, _domain="com.microsoft")


class TanhGeluOp(pattern.RewriteRuleClassBase):
    """The opset-20 Gelu op with approximate="tanh"."""

    def pattern(self, op, x):
        return op.Gelu(x, approximate="tanh")

    def rewrite(self, op, x):
        return op.FastGelu(x, _domain="com.microsoft")


class FastGeluBias(pattern.RewriteRuleClassBase):
    """FastGelu(h + b) ==> FastGelu(h, b): the kernel adds a 1-D bias while it reads h."""

    def pattern(self, op, h, bias):
        return op.FastGelu(op.Add(h, bias), _domain="com.microsoft")

    def check(self, context, h, bias, **_):
        result = pattern.MatchResult()
        const = bias.const_value
        if const is None or len(const.shape) != 1 or h.shape is None or h.shape[-1] != const.shape[0]:
            return result.fail("the addend is not a 1-D constant bias over the last axis")
        return result

    def rewrite(self, op, h, bias):
        return op.FastGelu(h, bias, _domain="com.microsoft")


GELU_RULES = pattern.RewriteRuleSet(
    [HalfXTimesBracket.rule(), XTimesHalfBracket.rule(), TanhGeluOp.rule()], commute=True)
BIAS_RULES = pattern.RewriteRuleSet([FastGeluBias.rule()], commute=True)


class FuseFastGelu(OnnxPass):
    """tanh-approximated GELU (spelled out or the Gelu op) ==> com.microsoft FastGelu."""

    name = "fuse_fast_gelu"

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        fused = GELU_RULES.apply_to_model(model)
        biased = BIAS_RULES.apply_to_model(model) if fused else 0
        return PassResult(fused > 0, {"fast_gelu": fused, "with_bias": biased})
