"""Fresh names for the values and nodes an ONNX pass adds.

ONNX needs every value name in a graph to be unique (and subgraphs read outer values by name),
so a pass that builds nodes by hand takes its names from one ``UniqueNames`` per run.
"""

from __future__ import annotations

import onnx_ir as ir


class UniqueNames:
    """``names("stem")`` gives ``stem_0``, ``stem_1``, ...: the first that no value, node or
    initializer of the model has, nor any name this object gave before."""

    def __init__(self, model: ir.Model):
        graph = model.graph
        self.taken = {v.name for n in graph.all_nodes() for v in (*n.inputs, *n.outputs) if v is not None and v.name}
        self.taken |= {n.name for n in graph.all_nodes() if n.name}
        self.taken |= {v.name for v in graph.inputs} | set(graph.initializers)

    def __call__(self, stem: str) -> str:
        n = 0
        while f"{stem}_{n}" in self.taken:
            n += 1
        self.taken.add(f"{stem}_{n}")
        return f"{stem}_{n}"


__all__ = ["UniqueNames"]
