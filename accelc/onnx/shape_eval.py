"""What a value of an ONNX graph is when it depends on shapes alone (a mask built from
``Shape(input_ids)``, say): the part of the public ONNX pass API that evaluates it.

With dynamic sizes such a value may change with them (GPT-2's causal mask is (1, 1, seq, seq)).
It is computed in ORT at several sizes of every symbolic dim (:func:`sample_shape_only`), and
folded into a constant only when every sample is the same array, up to broadcasting along axes
that have size 1 (:func:`evaluate_shape_only`). Sampling is evidence, not proof: a value that
changed only beyond the sampled sizes would be folded; the optimiser's checks at the caller's
probe shapes are the backstop.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx_ir as ir

# Sizes each symbolic dim is sampled at: 1 for every symbol, then each symbol alone at the others,
# then all of them together at each.
EVAL_SIZES = (1, 2, 3, 5, 8, 13)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _symbols(sources: list[ir.Value]) -> list[str] | None:
    """The symbolic dim names of ``sources``' shapes, or None when a shape, a dtype or a dim is
    unknown or is an expression (``seq*batch``): feeds could not be made consistent."""
    symbols: dict[str, None] = {}
    for s in sources:
        if s.shape is None or s.dtype is None:
            return None
        for d in s.shape:
            if isinstance(d, int):
                continue
            name = getattr(d, "value", None)
            if not isinstance(name, str) or not _NAME.match(name):
                return None
            symbols[name] = None
    return list(symbols)


def _assignments(symbols: list[str]) -> list[dict[str, int]]:
    base = {s: 1 for s in symbols}
    points = [base]
    for s in symbols:
        points += [{**base, s: n} for n in EVAL_SIZES[1:]]
    if len(symbols) > 1:
        points += [{s: n for s in symbols} for n in EVAL_SIZES[1:]]
    return points


def sample_shape_only(model: ir.Model, value: ir.Value) -> list[np.ndarray] | None:
    """``value`` computed at several sizes of every symbolic dim it depends on (all 1 first), or
    None when it reads input data, the shapes it reads are not plain named dims, or ORT can't run it.
    One sample when it depends on no symbolic size."""
    if value.const_value is not None:
        return [value.const_value.numpy()]
    closure = shape_only_closure(value)
    if closure is None:
        return None
    nodes, sources, constants = closure
    symbols = _symbols(sources)
    if symbols is None:
        return None
    needed = {id(n) for n in nodes}
    order = [n for n in model.graph if id(n) in needed]  # the graph is topologically sorted
    graph = onnx.helper.make_graph(
        [ir.serde.serialize_node(n) for n in order], "shape_only",
        [onnx.helper.make_tensor_value_info(s.name, s.dtype.value, [d if isinstance(d, int) else d.value for d in s.shape])
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
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a size the subgraph refuses is an answer, not an error to log
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        for sizes in _assignments(symbols):
            feeds = {s.name: np.zeros([d if isinstance(d, int) else sizes[d.value] for d in s.shape], dtype=s.dtype.numpy())
                     for s in sources}
            results.append(session.run(None, feeds)[0])
    except Exception:
        return None
    return results


def same_at_every_size(samples: list[np.ndarray]) -> np.ndarray | None:
    """The first sample when every other one equals it broadcast along its size-1 axes, else None."""
    first = samples[0]
    for out in samples[1:]:
        if first.ndim != out.ndim or any(a != b and a != 1 for a, b in zip(first.shape, out.shape)):
            return None
        if not np.array_equal(out, np.broadcast_to(first, out.shape)):
            return None
    return first


def evaluate_shape_only(model: ir.Model, value: ir.Value) -> np.ndarray | None:
    """``value`` as a constant when it depends on no input data and on no symbolic size.

    Computed at several sizes of each symbolic dim (:func:`sample_shape_only`); every sample must
    equal the one at size 1, broadcast along the axes that are 1 there (a mask expanded to the
    batch: the constant keeps that axis as 1, and its readers broadcast it). None when it reads
    data, changes with a size (a causal mask with the sequence length), or ORT can't run it.
    """
    samples = sample_shape_only(model, value)
    return None if samples is None else same_at_every_size(samples)


__all__ = ["evaluate_shape_only", "sample_shape_only", "same_at_every_size", "shape_only_closure", "EVAL_SIZES"]
