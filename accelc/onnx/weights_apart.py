"""An ONNX model held the way ONNX Runtime and OpenVINO open it fastest: the graph serialised
without its large weights, the weights kept apart as arrays.

    ir.Model ─► graph bytes: each large initializer an external-data reference
            │                 (location "model.onnx.data", offset, length)
            └─► its weights: numpy arrays (the model's own where its tensors hold arrays)
    open:   InferenceSession(graph bytes) with SessionOptions.add_external_initializers(names, weights)
    write:  model.onnx (graph bytes) + model.onnx.data (the weights at their offsets)

Why: serialising a model's weights into one protobuf buffer, for ONNX Runtime to parse back,
copies them twice per session opened. On GPT-2's export (500 MB of weights,
``benchmarks/probe_weights_apart.py``, six rounds, each way alone) that took 1.1-3.5 s from the
model to an open session (serialising alone 0.6-2.3 s: the buffer is allocated fresh, and the
time moves with the machine), against 0.7-1.2 s with the weights handed over as arrays, and the
sessions run at the same speed. Inside a build, beside OpenVINO's compilation, GPT-2's ONNX
Runtime build went from 12-14 s to 7-8 s (``benchmarks/results/build-time.md``). ONNX Runtime
copies the arrays into its session, so they need not outlive the open.

The two files written are the ONNX external-data layout that plain ONNX Runtime, OpenVINO and
``onnx.load`` read (``model.onnx`` with ``model.onnx.data`` beside it); a model of any size
takes this form, so there is no 2 GB protobuf limit to handle apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

DATA_SUFFIX = ".data"
MODEL_NAME = "model.onnx"
# Smaller initializers (shapes, axes, scalars) stay in the graph: ONNX shape inference reads
# them, and handing them apart would save nothing.
MIN_BYTES = 1024
# Each weight starts at a page boundary of the data file, so that a reader may map it.
ALIGN = 4096
# The element types ONNX Runtime takes an array of (OrtValue.ortvalue_from_numpy); others
# (bfloat16, float8, int4) stay in the graph.
_APART_TYPES = {np.dtype(t) for t in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16,
                                      np.int32, np.uint32, np.int64, np.uint64, np.bool_)}


@dataclass
class WeightsApart:
    """A model as graph bytes plus the weights they refer to (see the module's docstring)."""

    proto: onnx.ModelProto  # the graph, its large initializers as external references
    graph_bytes: bytes  # ``proto`` serialised
    names: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def add_to(self, options) -> None:
        """Hand the weights to an ``onnxruntime.SessionOptions`` that opens :attr:`graph_bytes`."""
        if self.names:
            import onnxruntime as ort

            options.add_external_initializers(self.names, [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays])

    def write(self, path: str) -> None:
        """``path`` (the graph) and ``path + ".data"`` (the weights), the standard external-data
        pair: the graph's references name the data file ``model.onnx.data``, so ``path`` must be
        called model.onnx. The writes release the GIL."""
        if os.path.basename(path) != MODEL_NAME:
            raise ValueError(f"the graph refers to {MODEL_NAME}{DATA_SUFFIX}: write it as {MODEL_NAME}")
        if self.names:
            with open(path + DATA_SUFFIX, "wb") as f:
                for offset, array in zip(self.offsets, self.arrays):
                    f.seek(offset)
                    f.write(memoryview(array).cast("B"))
        with open(path, "wb") as f:
            f.write(self.graph_bytes)


def weights_apart(model: ir.Model | onnx.ModelProto) -> WeightsApart:
    """``model`` as :class:`WeightsApart`, without initializers no node reads. ``model`` is not
    changed (an ``ir.Model``'s large initializers are swapped for references while it is
    serialised, then put back: serialising them is what this avoids)."""
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)  # its tensors stay views of the proto's bytes
    apart: dict[str, ir.TensorProtocol] = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is not None and tensor.nbytes >= MIN_BYTES and _numpy_dtype(tensor) in _APART_TYPES:
            apart[name] = tensor
            value.const_value = ir.ExternalTensor(MODEL_NAME + DATA_SUFFIX, 0, tensor.nbytes, tensor.dtype,
                                                  shape=tensor.shape, name=name)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        for name, tensor in apart.items():
            model.graph.initializers[name].const_value = tensor
    proto = without_unused_initializers(proto)
    result = WeightsApart(proto, b"")
    end = 0
    for init in proto.graph.initializer:
        tensor = apart.get(init.name)
        if tensor is None or init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        array = np.ascontiguousarray(tensor.numpy())
        offset = -(-end // ALIGN) * ALIGN
        for entry in init.external_data:
            if entry.key == "offset":
                entry.value = str(offset)
        result.names.append(init.name)
        result.arrays.append(array)
        result.offsets.append(offset)
        end = offset + array.nbytes
    result.graph_bytes = proto.SerializeToString()
    return result


def _numpy_dtype(tensor: ir.TensorProtocol) -> np.dtype | None:
    try:
        return np.dtype(tensor.dtype.numpy())
    except (TypeError, ValueError):
        return None


def without_unused_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without initializers no node reads (what the exporter and folding passes leave
    behind): plain ONNX Runtime warns once per unused initializer when it loads a model."""
    used = {name for node in _all_nodes(model.graph) for name in node.input} | {o.name for o in model.graph.output}
    # Deleted in place, last first: rebuilding the list copied every weight (1.3 s on GPT-2).
    for index in reversed([i for i, init in enumerate(model.graph.initializer) if init.name not in used]):
        del model.graph.initializer[index]
    return model


def _all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the subgraphs (If branches, loops) inside it."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _all_nodes(sub)


__all__ = ["WeightsApart", "weights_apart", "without_unused_initializers", "DATA_SUFFIX", "MODEL_NAME"]
