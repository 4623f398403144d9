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
        # Counted apart, so the stats agree with the node counts (which count calls only):
        # "removed" is calls, "unused_constants" the get_attr nodes another pass left behind.
        before = _count(gm)
        gm.graph.eliminate_dead_code()
        remove_unused_constants(gm)
        calls, constants = (b - a for b, a in zip(before, _count(gm)))
        stats = {"removed": calls} | ({"unused_constants": constants} if constants else {})
        return PassResult(modified=calls + constants > 0, stats=stats)


def _count(gm: torch.fx.GraphModule) -> tuple[int, int]:
    """(calls, constants) in the graph."""
    ops = [n.op for n in gm.graph.nodes]
    return sum(op in ("call_function", "call_method", "call_module") for op in ops), ops.count("get_attr")
