"""Cut a graph into N stages, contiguous in topological order, minimising the slowest stage.

Let the call nodes in topological order have costs ``w_0 .. w_{n-1}`` (seconds, cost.py),
``S`` their prefix sums and ``c(p)`` the bytes live across boundary ``p`` (values made before
``p`` and used at or after it; constants excluded: each stage keeps its own). Stage ``k`` on a
device of relative speed ``v_k`` holding nodes ``[i, j)`` costs

    T_k(i, j) = (S_j - S_i) / v_k + penalty * (c(i) + c(j)) / BANDWIDTH

and the plan minimises ``max_k T_k`` by dynamic programming over boundaries (O(N n^2), the
inner minimum vectorised). ``get_attr`` constants go with every stage that uses them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.fx

from ..errors import UserInputError
from ..patterns import fetch_attr
from .cost import BANDWIDTH, NodeCost, apply_profile, estimate_costs, profile_nodes, tensor_bytes
from .plan import CALL_OPS, Cut, Plan, Stage

log = logging.getLogger(__name__)

# Relative speed of a device kind for the static estimate; a profile replaces guesswork.
DEVICE_SPEED = {"cpu": 1.0, "cuda": 20.0}


class PartitionError(UserInputError):
    """The graph cannot be cut as asked (more stages than nodes, bad device list or boundaries)."""


def _call_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op in CALL_OPS]


def _output_leaves(gm: torch.fx.GraphModule) -> list:
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    leaves: list = []
    torch.fx.node.map_aggregate(out.args[0], leaves.append)
    return leaves


def live_sets(gm: torch.fx.GraphModule) -> list[list[str]]:
    """``live[p]``: names of values defined before boundary p and used at or after it, p = 0..n."""
    calls = _call_nodes(gm)
    n = len(calls)
    pos = {node.name: i for i, node in enumerate(calls)}
    live: list[list[str]] = [[] for _ in range(n + 1)]
    out_names = {x.name for x in _output_leaves(gm) if isinstance(x, torch.fx.Node)}
    for node in gm.graph.nodes:
        if node.op not in CALL_OPS and node.op != "placeholder":
            continue
        uses = [pos[u.name] for u in node.users if u.name in pos]
        last = n if node.name in out_names else max(uses, default=-1)
        first = 0 if node.op == "placeholder" else pos[node.name] + 1
        for p in range(first, last + 1):
            live[p].append(node.name)
    return live


def _cut_bytes(gm: torch.fx.GraphModule, live: list[list[str]]) -> np.ndarray:
    nodes = {n.name: n for n in gm.graph.nodes}
    c = np.array([sum(tensor_bytes(nodes[v].meta.get("val")) for v in names) for names in live], dtype=np.float64)
    c[0] = c[-1] = 0.0  # graph inputs and outputs move whatever the plan
    return c


def _best_boundaries(w: np.ndarray, c: np.ndarray, speeds: list[float], penalty: float) -> list[int]:
    """Boundaries 0 = b_0 < b_1 < ... < b_N = n minimising the costliest stage (see module doc)."""
    n, stages = len(w), len(speeds)
    S = np.concatenate([[0.0], np.cumsum(w)])
    cut = penalty * c / BANDWIDTH
    INF = np.inf
    dp = np.full((stages + 1, n + 1), INF)
    arg = np.zeros((stages + 1, n + 1), dtype=np.int64)
    dp[0, 0] = 0.0
    for k in range(1, stages + 1):
        v = speeds[k - 1]
        for j in range(k, n - (stages - k) + 1):
            i = np.arange(k - 1, j)
            seg = (S[j] - S[i]) / v + cut[i] + cut[j]
            val = np.maximum(dp[k - 1, i], seg)
            best = int(np.argmin(val))
            dp[k, j], arg[k, j] = val[best], i[best]
    bounds = [n]
    for k in range(stages, 0, -1):
        bounds.append(int(arg[k, bounds[-1]]))
    return bounds[::-1]


def make_plan(
    gm: torch.fx.GraphModule,
    example_inputs: tuple | None = None,
    stages: int | None = None,
    devices: list[str] | None = None,
    profile: bool = False,
    cut_penalty: float = 1.0,
    boundaries: list[int] | None = None,
    backends: list[str] | None = None,
    total_threads: int | None = None,
) -> Plan:
    """Partition ``gm`` into ``stages`` (or ``len(devices)``) stages; see the module docstring.

    ``profile=True`` times every node on the first stage's device with ``example_inputs`` and
    balances on measured time (kept in ``plan.node_ms``). ``boundaries`` (positions in the call
    node order, ascending, without 0 and n) forces the cuts instead of optimising them.
    """
    if devices is None:
        devices = ["cpu"] * (stages or 1)
    if stages is None:
        stages = len(devices)
    if len(devices) != stages:
        raise PartitionError(f"{stages} stages but {len(devices)} devices given; give one device per stage")
    calls = _call_nodes(gm)
    n = len(calls)
    if stages < 1 or stages > n:
        raise PartitionError(f"cannot cut {n} call nodes into {stages} stages; use 1..{n} stages")
    costs: dict[str, NodeCost] = estimate_costs(gm)
    node_ms: dict[str, float] = {}
    if profile:
        if example_inputs is None:
            raise PartitionError("profile=True needs example_inputs to time the nodes")
        node_ms = profile_nodes(gm, example_inputs, devices[0])
        apply_profile(costs, node_ms)
    live = live_sets(gm)
    c = _cut_bytes(gm, live)
    if boundaries is None:
        w = np.array([costs[x.name].seconds for x in calls])
        speeds = [1.0 if profile else DEVICE_SPEED.get(torch.device(d).type, 1.0) for d in devices]
        bounds = _best_boundaries(w, c, speeds, cut_penalty)
    else:
        bounds = [0, *boundaries, n]
        if len(bounds) != stages + 1 or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise PartitionError(f"boundaries {boundaries} must be {stages - 1} ascending positions in 1..{n - 1}")
    threads_total = total_threads or torch.get_num_threads()
    cpu_stages = sum(1 for d in devices if torch.device(d).type == "cpu")
    cpu_threads = max(1, threads_total // max(1, cpu_stages))
    placeholders = [x.name for x in gm.graph.nodes if x.op == "placeholder"]
    out_leaves = [x.name if isinstance(x, torch.fx.Node) else None for x in _output_leaves(gm)]
    plan_stages: list[Stage] = []
    for k in range(stages):
        i, j = bounds[k], bounds[k + 1]
        names = [x.name for x in calls[i:j]]
        plan_stages.append(Stage(
            index=k, nodes=names, device=devices[k], backend=(backends[k] if backends else "torch"),
            cost_s=float(sum(costs[x].seconds for x in names)), flops=float(sum(costs[x].flops for x in names)),
            threads=cpu_threads if torch.device(devices[k]).type == "cpu" else 1,
            inputs=placeholders if k == 0 else list(live[i]),
            outputs=list(dict.fromkeys(x for x in out_leaves if x)) if k == stages - 1 else list(live[j]),
        ))
    cuts = [Cut(after_stage=k, tensors=list(live[bounds[k + 1]]), bytes=int(c[bounds[k + 1]])) for k in range(stages - 1)]
    plan = Plan(plan_stages, cuts, placeholders, out_leaves, profiled=profile, node_ms=node_ms)
    log.debug("plan:\n%s", plan.summary())
    return plan



def fit_plan(gm: torch.fx.GraphModule, plan: Plan) -> Plan:
    """``plan`` when every node it names is in ``gm``, else a fresh plan with the same stages and
    devices. A graph reloaded from model.pt2 has been re-exported and may name its nodes anew;
    the fresh plan is deterministic (static costs), so every process of a distributed run agrees."""
    names = {n.name for n in gm.graph.nodes}
    if all(node in names for stage in plan.stages for node in stage.nodes):
        return plan
    log.info("the plan names nodes this graph does not have; re-planning with the same stages and devices")
    return make_plan(gm, stages=plan.num_stages, devices=plan.devices)


def build_stage_module(gm: torch.fx.GraphModule, plan: Plan, index: int, device: str | torch.device | None = None) -> torch.fx.GraphModule:
    """Stage ``index`` as its own GraphModule: ``forward(*stage.inputs) -> tuple(stage.outputs)``.

    Constants it uses are copied in as references (moved to ``device`` when given).
    """
    stage = plan.stages[index]
    return extract_submodule(gm, stage.nodes, stage.inputs, stage.outputs, device)


def extract_submodule(gm: torch.fx.GraphModule, node_names: list[str], inputs: list[str], outputs: list[str],
                      device: str | torch.device | None = None) -> torch.fx.GraphModule:
    """The call nodes ``node_names`` as a GraphModule taking ``inputs`` and returning ``outputs``."""
    nodes = {x.name: x for x in gm.graph.nodes}
    graph = torch.fx.Graph()
    root = torch.nn.Module()
    env: dict[str, torch.fx.Node] = {}
    for name in inputs:
        ph = graph.placeholder(name)
        ph.meta = dict(nodes[name].meta)
        env[name] = ph

    def lookup(arg: torch.fx.Node) -> torch.fx.Node:
        if arg.name in env:
            return env[arg.name]
        if arg.op == "get_attr":  # constants go with their users
            value = fetch_attr(gm, arg.target)
            attr = arg.target.replace(".", "_")
            if device is not None and isinstance(value, torch.Tensor):
                value = value.to(device)
            if isinstance(value, torch.nn.Parameter):
                root.register_parameter(attr, value) if device is None else root.register_buffer(attr, value.detach())
            elif isinstance(value, torch.Tensor):
                root.register_buffer(attr, value)
            else:
                setattr(root, attr, value)
            env[arg.name] = graph.get_attr(attr)
            env[arg.name].meta = dict(arg.meta)
            return env[arg.name]
        raise PartitionError(f"node {arg.name!r} is used in a stage but neither made there nor passed in")

    for name in node_names:
        src = nodes[name]
        env[name] = graph.node_copy(src, lookup)
    graph.output(tuple(env[name] if name in env else lookup(nodes[name]) for name in outputs))
    sub = torch.fx.GraphModule(root, graph)
    sub.graph.lint()
    return sub
