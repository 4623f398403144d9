"""The pass API: everything a pass plugin imports from accelc, for either IR.

A pass is a class with a ``name``, the IR it rewrites (``ir = "fx"``: a ``torch.fx.GraphModule``;
``ir = "onnx"``: an ``onnx_ir.Model``) and ``run(graph, context) -> PassResult``. It rewrites
the graph it is given in place and says what it did::

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

The contract, enforced by :class:`accelc.pass_manager.PassManager`:
- the manager hands each pass its own copy of the graph. For fx graphs the nodes are copied
  but the weight tensors are shared (with the graph before the pass and with the user's
  model), so a pass must never write into an existing tensor: make a new one and point the
  graph at it (:func:`accelc.patterns.add_constant`). A write is stopped where it happens and
  the pass is failed and named;
- a pass returns a :class:`PassResult`; one that raises is failed, one whose graph changes the
  model's answers is rolled back, and the pipeline goes on without it.

Where a pass goes: the stage it belongs to (``stage``: "graph", the portable graph passes;
"lowering", device lowerings the PyTorch runtime gets; "onnx", the exported model) and, for a
plugin that wants to join a stage's default pipeline, a position (``after`` or ``before`` a
named pass of that stage). A pass registers through the ``accelc.passes`` entry-point group
(fx passes) or ``accelc.onnx_passes`` (ONNX passes), built-in or not.
"""

from __future__ import annotations

import logging
import sys
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
    stage: str = "graph"


@dataclass
class PassContext:
    """What a pass may know about the compilation, besides the graph itself."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8" (int8: the ONNX stage only)
    example_inputs: tuple = ()
    refusals: list[Refusal] = field(default_factory=list)
    current_pass: str = ""
    stage: str = "graph"
    # The relative error (max|out - eager fp32| / max|eager fp32|) a lowered precision may cost,
    # where the caller has one (precision="auto"'s tolerance); None: the precision's own bar.
    error_budget: float | None = None
    # Input sets the user gave as representative of real calls (accelerate(calibration=...)): what
    # static int8 fixes activation ranges from. Empty: none given.
    calibration_inputs: list = field(default_factory=list)

    def __post_init__(self):
        self.device = torch.device(self.device)  # "cpu" and torch.device("cpu") alike

    def refuse(self, node, reason: str) -> None:
        """Record that ``node`` (an fx node, an ONNX node or a name) matched the start of a
        pattern but was not rewritten, and why."""
        if isinstance(node, str):
            name, location = node, None
        elif isinstance(node, torch.fx.Node):
            name, location = node.name, node_location(node)
        else:  # an onnx_ir node
            name, location = getattr(node, "name", None) or getattr(node, "op_type", "?"), None
        self.refusals.append(Refusal(self.current_pass, name, reason, location, self.stage))
        log.debug("%s: left %s alone: %s", self.current_pass, name, reason)

    @property
    def compute_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                "int8": torch.float32}[self.precision]


class Pass:
    """Base class of every pass. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    ir: ClassVar[str] = "fx"  # "fx" | "onnx"
    stage: ClassVar[str | None] = None  # None: "graph" for fx passes, "onnx" for ONNX passes
    after: ClassVar[str | None] = None  # a plugin's place in its stage's default pipeline
    before: ClassVar[str | None] = None

    @classmethod
    def description(cls) -> str:
        """The first line of the class (or module) docstring."""
        doc = cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", "") or ""
        return next((line.strip() for line in doc.strip().splitlines() if line.strip()), "")

    def run(self, graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, graph, ctx: PassContext) -> PassResult:
        result = self.run(graph, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass {self.name!r} returned {type(result).__name__}, not PassResult")
        return result


__all__ = ["Pass", "PassResult", "PassContext", "Refusal"]
