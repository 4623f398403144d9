"""Per-node cost: FLOPs and bytes from captured shapes, optionally refined by timing.

Static estimate (from ``node.meta["val"]``, fake tensors with shapes and dtypes)::

    linear(x[..., K], W[N, K])        flops = 2 * numel(out) * K
    matmul / bmm / mm / addmm         flops = 2 * numel(out) * K      (K = contracted size)
    conv(x, W[Cout, Cin/g, *k])       flops = 2 * numel(out) * Cin/g * prod(k)
    sdpa(q[..., L, E], k[..., S, E])  flops = 4 * numel(q) / E * S * E  (QK^T and PV)
    everything else                   flops = numel(out)                (elementwise)
    bytes = sum(bytes of tensor inputs) + sum(bytes of tensor outputs); views move no bytes

A node's estimated time is a roofline sum, ``flops / FLOP_RATE + bytes / BANDWIDTH``; the
absolute rates only matter for weighing compute against cut traffic, not for balancing.
``profile_nodes`` replaces the estimate with measured per-node milliseconds on the target.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import networkx as nx
import torch
import torch.fx
from torch.utils._pytree import tree_leaves

log = logging.getLogger(__name__)

FLOP_RATE = 50e9  # FLOP/s: a few CPU cores with vector units; only the ratio to BANDWIDTH matters
BANDWIDTH = 10e9  # bytes/s of memory or interconnect traffic

_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "transpose", "t", "permute", "unsqueeze", "squeeze", "expand",
    "slice", "select", "alias", "detach", "contiguous", "flatten", "unflatten", "split", "chunk",
    "_assert_tensor_metadata", "getitem", "dropout", "to", "clone", "lift_fresh_copy",
}


@dataclass
class NodeCost:
    flops: float
    bytes: float
    out_bytes: float
    measured_ms: float | None = None

    @property
    def seconds(self) -> float:
        """Measured time when there is one, the roofline estimate otherwise."""
        if self.measured_ms is not None:
            return self.measured_ms / 1e3
        return self.flops / FLOP_RATE + self.bytes / BANDWIDTH


def _tensors(value) -> list:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def tensor_bytes(value) -> int:
    """Bytes of every tensor leaf of a (nested) meta value."""
    total = 0
    for t in _tensors(value):
        try:
            total += int(t.numel()) * t.element_size()
        except Exception:  # symbolic sizes: unknown, count nothing
            pass
    return total


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _numel(t) -> float:
    try:
        return float(t.numel())
    except Exception:
        return 0.0


def node_flops(node: torch.fx.Node) -> float:
    """FLOPs of one call node from the shapes of its arguments and result."""
    op = _op_name(node)
    outs = _tensors(node.meta.get("val"))
    out_numel = sum(_numel(t) for t in outs)
    args = [a.meta.get("val") if isinstance(a, torch.fx.Node) else a for a in node.args]
    tens = [a for a in args if isinstance(a, torch.Tensor)]
    try:
        if op in ("linear", "matmul", "mm", "bmm") and tens:
            return 2.0 * out_numel * tens[0].shape[-1]
        if op in ("addmm", "baddbmm") and len(tens) >= 2:
            return 2.0 * out_numel * tens[1].shape[-1]
        if op.startswith("conv") or op in ("convolution", "_convolution"):
            w = tens[1]
            return 2.0 * out_numel * math.prod(w.shape[1:])
        if op.startswith("scaled_dot_product") or op.startswith("_scaled_dot_product"):
            q, k = tens[0], tens[1]
            return 4.0 * _numel(q) * k.shape[-2]
    except (IndexError, TypeError):
        pass
    if op in _VIEW_OPS:
        return 0.0
    return out_numel


def estimate_costs(gm: torch.fx.GraphModule) -> dict[str, NodeCost]:
    """Static cost of every call node, by node name."""
    costs: dict[str, NodeCost] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method", "call_module"):
            continue
        out_b = tensor_bytes(node.meta.get("val"))
        if _op_name(node) in _VIEW_OPS:
            costs[node.name] = NodeCost(0.0, 0.0, 0.0 if _op_name(node) != "contiguous" else out_b)
            continue
        in_b = sum(tensor_bytes(a.meta.get("val")) for a in node.all_input_nodes)
        costs[node.name] = NodeCost(node_flops(node), float(in_b + out_b), float(out_b))
    return costs


def graph_dag(gm: torch.fx.GraphModule, costs: dict[str, NodeCost] | None = None) -> nx.DiGraph:
    """The node DAG: one vertex per fx node (attrs op, target, seconds), edges carry tensor bytes."""
    costs = costs if costs is not None else estimate_costs(gm)
    dag = nx.DiGraph()
    for node in gm.graph.nodes:
        c = costs.get(node.name)
        dag.add_node(node.name, op=node.op, target=str(node.target), seconds=c.seconds if c else 0.0,
                     flops=c.flops if c else 0.0)
        for src in node.all_input_nodes:
            dag.add_edge(src.name, node.name, bytes=tensor_bytes(src.meta.get("val")))
    return dag


class _TimingInterpreter(torch.fx.Interpreter):
    """Runs the graph node by node and keeps the best wall time of each call."""

    def __init__(self, gm: torch.fx.GraphModule, device: torch.device):
        super().__init__(gm)
        self.times: dict[str, float] = {}
        self.cuda = device.type == "cuda"

    def run_node(self, n):
        if n.op not in ("call_function", "call_method", "call_module"):
            return super().run_node(n)
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = super().run_node(n)
        if self.cuda:
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) * 1e3
        self.times[n.name] = min(elapsed, self.times.get(n.name, math.inf))
        return result


def profile_nodes(gm: torch.fx.GraphModule, inputs: tuple, device: str | torch.device = "cpu",
                  repeats: int = 3) -> dict[str, float]:
    """Measured milliseconds per call node (best of ``repeats``) on ``device``."""
    dev = torch.device(device)
    module = gm.to(dev) if dev.type != "cpu" else gm
    args = [x.to(dev) if isinstance(x, torch.Tensor) else x for x in inputs]
    interp = _TimingInterpreter(module, dev)
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first run warms caches and allocators
            interp.run(*args)
    return interp.times


def apply_profile(costs: dict[str, NodeCost], times_ms: dict[str, float]) -> None:
    for name, ms in times_ms.items():
        if name in costs:
            costs[name].measured_ms = ms
