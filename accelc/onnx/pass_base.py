"""The ONNX-level pass API: what an ONNX pass plugin imports.

An ONNX pass has a ``name`` and ``run(model, ctx) -> PassResult``; it rewrites the
``onnx_ir.Model`` in place (with onnxscript's rewriter or onnx_ir's graph editing, never raw
protobuf) and says what it did::

    class FuseThings(OnnxPass):
        \"\"\"Fuse things.  A(B(x)) ==> AB(x)\"\"\"
        name = "fuse_things"

        def run(self, model, ctx):
            count = rewrite_rules(model, RULES)
            return PassResult(modified=count > 0, stats={"fused": count})

Passes register in the ``accelc.onnx_passes`` entry-point group, apart from the fx passes of
``accelc.passes``: the two kinds run on different graphs at different times. The optimiser
(:mod:`accelc.onnx.optimize`) runs each on a copy and keeps it only if ONNX Runtime still gives
the reference answers.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import ClassVar

import onnx_ir as ir

from ..errors import PassRegistryError
from ..pass_base import PassResult
from .attention import hiding_bias, masked_attention, plain_self_attention_blocker
from .naming import UniqueNames
from .shape_eval import evaluate_shape_only, sample_shape_only, same_at_every_size, shape_only_closure

log = logging.getLogger(__name__)

GROUP = "accelc.onnx_passes"


@dataclass
class OnnxRefusal:
    pass_name: str
    node: str
    reason: str


@dataclass
class OnnxPassContext:
    """What an ONNX pass may know besides the model."""

    precision: str = "fp32"
    device: str = "cpu"
    refusals: list[OnnxRefusal] = field(default_factory=list)
    current_pass: str = ""

    def refuse(self, node: ir.Node | str, reason: str) -> None:
        name = node if isinstance(node, str) else (node.name or node.op_type)
        self.refusals.append(OnnxRefusal(self.current_pass, name, reason))
        log.debug("%s: left %s alone: %s", self.current_pass, name, reason)


def count_ops(model: ir.Model, *op_types: str) -> int:
    """How many nodes of ``model`` (subgraphs included) have one of ``op_types``."""
    return sum(1 for node in model.graph.all_nodes() if node.op_type in op_types)


class OnnxPass:
    """Base class of every ONNX pass. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""

    @classmethod
    def description(cls) -> str:
        doc = cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", "") or ""
        return next((line.strip() for line in doc.strip().splitlines() if line.strip()), "")

    def run(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, model: ir.Model, ctx: OnnxPassContext) -> PassResult:
        result = self.run(model, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"ONNX pass {self.name!r} returned {type(result).__name__}, not PassResult")
        return result


def discover_onnx_passes() -> dict[str, type[OnnxPass]]:
    """Every ONNX pass registered in ``accelc.onnx_passes``, by name; duplicates are an error."""
    found: dict[str, type[OnnxPass]] = {}
    sources: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and sources[ep.name] == ep.value:
            continue  # the same distribution seen twice on sys.path
        if ep.name in found:
            raise PassRegistryError(f"ONNX pass {ep.name!r} is registered twice: by {sources[ep.name]} and by {ep.value}; rename one")
        try:
            cls = ep.load()
        except Exception as exc:
            raise PassRegistryError(f"ONNX pass plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, OnnxPass)) or cls.name != ep.name:
            raise PassRegistryError(f"entry point {ep.name!r} ({ep.value}) is not an OnnxPass named {ep.name!r}")
        found[ep.name], sources[ep.name] = cls, ep.value
    return found


__all__ = ["OnnxPass", "OnnxPassContext", "OnnxRefusal", "PassResult", "UniqueNames", "count_ops", "discover_onnx_passes",
           "evaluate_shape_only", "hiding_bias", "masked_attention", "plain_self_attention_blocker", "sample_shape_only",
           "same_at_every_size", "shape_only_closure", "GROUP"]
