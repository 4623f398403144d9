"""The ONNX-level pass API: what an ONNX pass plugin imports.

An ONNX pass is an :class:`accelc.Pass` with ``ir = "onnx"``: ``run(model, ctx) -> PassResult``
rewrites the ``onnx_ir.Model`` in place (with onnxscript's rewriter or onnx_ir's graph editing,
never raw protobuf) and says what it did::

    class FuseThings(OnnxPass):
        \"\"\"Fuse things.  A(B(x)) ==> AB(x)\"\"\"
        name = "fuse_things"

        def run(self, model, ctx):
            count = rewrite_rules(model, RULES)
            return PassResult(modified=count > 0, stats={"fused": count})

Passes register in the ``accelc.onnx_passes`` entry-point group and run in the pipeline's
``onnx`` stage, through the same :class:`accelc.pass_manager.PassManager` as the fx passes: each
on a copy, kept only if ONNX Runtime still gives the reference answers at every checked size.
This module also holds the helpers ONNX passes share (attention matching, shape evaluation, the
CPU's int8 instructions).
"""

from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir

from ..cpu import cpu_has_int8_dot_products
from ..pass_base import Pass, PassContext, PassResult, Refusal
from .attention import hiding_bias, masked_attention, plain_self_attention_blocker
from .naming import UniqueNames
from .shape_eval import evaluate_shape_only, sample_shape_only, same_at_every_size, shape_only_closure

# One context and one refusal type for both IRs; the old names stay for plugins written against them.
OnnxPassContext = PassContext
OnnxRefusal = Refusal


def bias_length(value: ir.Value | None) -> int | None:
    """N when ``value`` is a constant that varies along its last axis only ((N,) or (1, …, 1, N)):
    a bias over N output features; else None."""
    const = None if value is None else value.const_value
    if const is None:
        return None
    shape = tuple(const.shape)
    if not shape or any(d != 1 for d in shape[:-1]):
        return None
    return shape[-1]


def count_ops(model: ir.Model, *op_types: str) -> int:
    """How many nodes of ``model`` (subgraphs included) have one of ``op_types``."""
    return sum(1 for node in model.graph.all_nodes() if node.op_type in op_types)


class OnnxPass(Pass):
    """Base class of every ONNX pass. Subclasses set ``name`` and implement :meth:`run`."""

    ir: ClassVar[str] = "onnx"


__all__ = ["OnnxPass", "OnnxPassContext", "OnnxRefusal", "PassResult", "UniqueNames", "bias_length", "count_ops", "cpu_has_int8_dot_products",
           "evaluate_shape_only", "hiding_bias", "masked_attention", "plain_self_attention_blocker", "sample_shape_only",
           "same_at_every_size", "shape_only_closure"]
