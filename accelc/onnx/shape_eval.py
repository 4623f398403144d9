"""What a value of an ONNX graph is when it depends on shapes alone (a mask built from
``Shape(input_ids)``, say): the part of the public ONNX pass API that evaluates it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

EVAL_BATCHES = (1, 2, 3)


def shape_only_closure(value: ir.Value) -> tuple[list[ir.Node], list[ir.Value], list[ir.Value]] | None:
    """Nodes computing ``value``, the values whose shapes (not data) they read, the initializers
    they use; None when the computation reads input data or holds a subgraph."""
    nodes: dict[int, ir.Node] = {}
    shape_sources: dict[int, ir.Value] = {}
    constants: dict[int, ir.Value] = {}
    stack = [value]
    while stack:
        v = stack.pop()
        if v.const_value is not None and v.producer() is None:
            constants[id(v)] = v
            continue
        node = v.producer()
        if node is None:  # a graph input read for its data
            return None
        if id(node) in nodes:
            continue
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            return None
        nodes[id(node)] = node
        if node.op_type in ("Shape", "Size") and node.domain == "":
            shape_sources[id(node.inputs[0])] = node.inputs[0]
            continue
        stack.extend(i for i in node.inputs if i is not None)
    return list(nodes.values()), list(shape_sources.values()), list(constants.values())


def evaluate_shape_only(model: ir.Model, value: ir.Value) -> np.ndarray | None:
    """``value`` as a constant when it depends on no input data and at most on the batch size.

    It is computed in ORT at each of ``EVAL_BATCHES``; every row along a batch axis must equal the
    first, and the result has that axis as 1. None when it reads data, has a dimension other than
    one symbolic size that the shapes it reads depend on, varies with the batch, or ORT can't run it.
    """
    if value.const_value is not None:
        return value.const_value.numpy()
    closure = shape_only_closure(value)
    if closure is None:
        return None
    nodes, sources, constants = closure
    symbols = {d for s in sources for d in (s.shape or [None]) if not isinstance(d, int)}
    if any(s.shape is None or s.dtype is None for s in sources) or len(symbols) > 1 or None in symbols:
        return None
    needed = {id(n) for n in nodes}
    order = [n for n in model.graph if id(n) in needed]  # the graph is topologically sorted
    graph = onnx.helper.make_graph(
        [ir.serde.serialize_node(n) for n in order], "shape_only",
        [onnx.helper.make_tensor_value_info(s.name, s.dtype.value, [d if isinstance(d, int) else "batch" for d in s.shape])
         for s in sources],
        [onnx.ValueInfoProto(name=value.name)],
        initializer=[ir.serde.serialize_tensor(c.const_value) for c in constants])
    for proto, c in zip(graph.initializer, constants):
        proto.name = c.name
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)

    import onnxruntime as ort

    results = []
    try:  # a subgraph ORT can't run on its own (a model-local function, say) is simply not a constant
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for batch in EVAL_BATCHES if symbols else (1,):
            feeds = {s.name: np.zeros([d if isinstance(d, int) else batch for d in s.shape], dtype=s.dtype.numpy()) for s in sources}
            results.append(session.run(None, feeds)[0])
    except Exception:
        return None
    first = results[0]
    for out in results[1:]:  # along the batch axis every row must be the first
        if first.ndim != out.ndim or any(a != b and a != 1 for a, b in zip(first.shape, out.shape)):
            return None
        if not np.array_equal(out, np.broadcast_to(first, out.shape)):
            return None
    return first


__all__ = ["evaluate_shape_only", "shape_only_closure", "EVAL_BATCHES"]
