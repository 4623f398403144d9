"""The pass API: everything a pass plugin imports from accelc.

A pass is a class with a ``name`` and a ``run(graph_module, context) -> PassResult`` method. It
rewrites the ``torch.fx.GraphModule`` it is given in place and says what it did::

    class FoldThings(Pass):
        \"\"\"Fold things.  things(x) ==> x\"\"\"
        name = "fold_things"

        def run(self, gm, ctx):
            folded = 0
            for node in find_nodes(gm, torch.ops.aten.things.default):
                if len(node.users) > 1:
                    ctx.refuse(node, "output has 2 users")
                    continue
                ...
                folded += 1
            return PassResult(modified=folded > 0, stats={"folded": folded})

The manager hands each pass its own copy of the graph (weights are shared, not copied), so a
pass must never modify an existing weight tensor in place: make a new tensor and point the
graph at it with :func:`accelc.patterns.add_constant`. A pass registers through the
``accelc.passes`` entry-point group, built-in or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.fx

from .source import node_location

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What a pass did: whether the graph changed, and counts such as ``{"folded": 3}``."""

    modified: bool
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Refusal:
    """A candidate a pass looked at and left alone, and why; ``accelc explain`` lists these."""

    pass_name: str
    node: str
    reason: str
    location: str | None = None


@dataclass
class PassContext:
    """What a pass may know about the compilation, besides the graph itself."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16"
    example_inputs: tuple = ()
    refusals: list[Refusal] = field(default_factory=list)
    current_pass: str = ""

    def refuse(self, node: torch.fx.Node, reason: str) -> None:
        """Record that ``node`` matched the start of a pattern but was not rewritten, and why."""
        refusal = Refusal(self.current_pass, node.name, reason, node_location(node))
        self.refusals.append(refusal)
        log.debug("%s: left %s alone: %s", self.current_pass, node.name, reason)

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]


class Pass:
    """Base class of every graph pass. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""

    @classmethod
    def description(cls) -> str:
        """The first line of the class (or module) docstring."""
        import sys

        doc = cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", "") or ""
        for line in doc.strip().splitlines():
            if line.strip():
                return line.strip()
        return ""

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        result = self.run(gm, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass {self.name!r} returned {type(result).__name__}, not PassResult")
        return result


__all__ = ["Pass", "PassResult", "PassContext", "Refusal"]
