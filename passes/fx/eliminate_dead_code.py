"""Dead-code elimination: drop nodes whose results nobody uses.

    y = f(x); return x          ==> return x        (f pure)

Ops with side effects (in-place mutation, asserts, prints) are kept, as ``torch.fx`` judges them
impure. Constants left without users go too, with the tensors accelc created for them.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import remove_unused_constants


class EliminateDeadCode(Pass):
    """Remove nodes and constants whose results are never used."""

    name = "eliminate_dead_code"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        before = len(gm.graph.nodes)
        gm.graph.eliminate_dead_code()
        remove_unused_constants(gm)
        removed = before - len(gm.graph.nodes)
        return PassResult(modified=removed > 0, stats={"removed": removed})
