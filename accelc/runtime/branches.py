"""Branch parallel: independent parts of one graph run at the same time on a thread pool.

The call nodes are grouped into chains (a node joins its producer's chain when it is that
producer's only consumer and the producer its only computed input), giving a coarse DAG::

    x ─┬─ conv1x1 ─ bn ─ relu ──────────────────┐
       ├─ conv1x1 ─ bn ─ relu ─ conv3x3 ─ bn ─ relu ┤
       ├─ conv1x1 ─ ... ─ conv5x5 ─ ...           ├─ cat
       └─ maxpool ─ conv1x1 ─ bn ─ relu ──────────┘

Chains are run in dataflow order: a chain starts when all its inputs exist. Chains costing at
least ``min_fraction`` of the graph go to the pool (so two heavy siblings overlap); cheap ones
run inline on the calling thread, where a hand-off would cost more than the work. Each worker
sets its own intra-op budget (``threads_per_worker``; see pipeline.py for why that is
per-thread), and the pool lives only for one call, so no thread outlives it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time

import torch
import torch.fx

from ..partition.cost import estimate_costs
from ..partition.partitioner import extract_submodule
from ..partition.plan import CALL_OPS
from .pipeline import Interval, StageError, Timeline

log = logging.getLogger(__name__)


def chain_groups(gm: torch.fx.GraphModule) -> list[list[str]]:
    """Call nodes grouped into maximal linear chains, in topological order of their heads."""
    group_of: dict[str, int] = {}
    groups: list[list[str]] = []
    for node in gm.graph.nodes:
        if node.op not in CALL_OPS:
            continue
        computed = [a for a in node.all_input_nodes if a.op in CALL_OPS]
        if len(computed) == 1 and len(computed[0].users) == 1 and computed[0].name in group_of:
            g = group_of[computed[0].name]
        else:
            g = len(groups)
            groups.append([])
        groups[g].append(node.name)
        group_of[node.name] = g
    return groups


class BranchParallelExecutor(torch.nn.Module):
    """Runs ``gm`` with independent heavy chains overlapping on ``workers`` threads."""

    def __init__(self, gm: torch.fx.GraphModule, workers: int = 2, threads_per_worker: int | None = None,
                 min_fraction: float = 0.02, timeout_s: float = 300.0):
        super().__init__()
        self.workers = workers
        self.threads_per_worker = threads_per_worker or max(1, torch.get_num_threads() // workers)
        self.timeout_s = timeout_s
        costs = estimate_costs(gm)
        total = sum(c.seconds for c in costs.values()) or 1.0
        groups = chain_groups(gm)
        self.groups = groups
        nodes = {n.name: n for n in gm.graph.nodes}
        out_node = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
        leaves: list = []
        torch.fx.node.map_aggregate(out_node.args[0], leaves.append)
        self.graph_outputs = [x.name if isinstance(x, torch.fx.Node) else None for x in leaves]
        out_names = set(n for n in self.graph_outputs if n)
        self.graph_inputs = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
        self.specs = []  # (inputs, outputs, heavy) per group
        mods = []
        for names in groups:
            member = set(names)
            ins = list(dict.fromkeys(a.name for x in names for a in nodes[x].all_input_nodes
                                     if a.name not in member and a.op != "get_attr"))
            outs = [x for x in names if x in out_names or any(u.name not in member for u in nodes[x].users if u.op != "output")]
            heavy = sum(costs[x].seconds for x in names) >= min_fraction * total
            self.specs.append((ins, outs, heavy))
            mods.append(extract_submodule(gm, names, ins, outs))
        self.group_modules = torch.nn.ModuleList(mods)
        self.heavy_groups = sum(1 for s in self.specs if s[2])
        self._codegen = gm.graph._codegen
        self.timeline: Timeline | None = None

    def _run_group(self, g: int, env: dict, timeline: Timeline, t0: float):
        ins, outs, _ = self.specs[g]
        start = time.perf_counter()
        try:
            result = self.group_modules[g](*[env[i] for i in ins])
        except Exception as exc:
            raise StageError(f"branch group {g} failed: {type(exc).__name__}: {exc} [nodes: {', '.join(self.groups[g][:8])}]") from exc
        timeline.intervals.append(Interval(g, 0, start - t0, time.perf_counter() - t0))
        return dict(zip(outs, result))

    def forward(self, *args):
        flat = list(self._codegen.process_inputs(*args))
        env = dict(zip(self.graph_inputs, flat))
        timeline = Timeline(len(self.groups), 1)
        t0 = time.perf_counter()
        pending = set(range(len(self.groups)))
        running: dict[cf.Future, int] = {}
        caller_threads = torch.get_num_threads()
        budget = self.threads_per_worker

        def init_worker():
            torch.set_num_threads(budget)

        pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="accelc-branch", initializer=init_worker)
        deadline = t0 + self.timeout_s
        try:
            with torch.inference_mode():
                while pending or running:
                    progressed = True
                    while progressed:  # start every ready group; cheap ones inline
                        progressed = False
                        for g in sorted(pending):
                            if all(i in env for i in self.specs[g][0]):
                                pending.discard(g)
                                if self.specs[g][2]:
                                    running[pool.submit(self._run_in_worker, g, env, timeline, t0)] = g
                                else:
                                    env.update(self._run_group(g, env, timeline, t0))
                                    progressed = True
                    if not running:
                        if pending:
                            raise StageError(f"branch groups {sorted(pending)[:5]} can never start; their inputs are missing")
                        break
                    remaining = deadline - time.perf_counter()
                    done, _ = cf.wait(list(running), timeout=max(0.0, remaining), return_when=cf.FIRST_COMPLETED)
                    if not done:
                        raise StageError(f"branch-parallel run did not finish within {self.timeout_s:.0f} s")
                    for fut in done:
                        running.pop(fut)
                        env.update(fut.result())  # re-raises a worker's StageError here
        finally:
            for fut in running:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(caller_threads)
        timeline.wall_s = time.perf_counter() - t0
        self.timeline = timeline
        return self._codegen.process_outputs([env[n] if n is not None else None for n in self.graph_outputs])

    def _run_in_worker(self, g, env, timeline, t0):
        with torch.inference_mode():
            return self._run_group(g, env, timeline, t0)


def build_branch_executor(gm: torch.fx.GraphModule, workers: int = 2, **kwargs) -> BranchParallelExecutor:
    return BranchParallelExecutor(gm, workers=workers, **kwargs)
