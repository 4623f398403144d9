"""Run a partition plan: stages in sequence across devices, or pipelined over micro-batches.

GPipe order for inference: the batch is split into M micro-batches; stage ``s`` runs
micro-batch ``m`` as soon as stage ``s - 1`` has handed it over, so with S stages the run takes
about ``(M + S - 1)`` slots of the slowest stage instead of ``M * S``:

    stage 0 | m0 | m1 | m2 |    |    |
    stage 1 |    | m0 | m1 | m2 |    |      (the empty slots are the bubble)

Threads and intra-op budgets. Each stage runs on a thread of its own created for the call (so
none outlives it). ``torch.set_num_threads`` sets a process-wide default *and* the calling
thread's OpenMP/MKL team size; ATen's ``parallel_for`` reads the calling thread's setting, so a
stage thread that calls it first gets its own budget (``stage.threads``). The caller's setting
is restored afterwards. CUDA stages run on their own stream; hand-overs carry an event the
consumer's stream waits on, so copies and kernels overlap without host synchronisation.

Micro-batching splits the batch (dimension 0) of every batched input into M chunks and
concatenates the outputs along dimension 0. With a dynamic batch (the default) any call batch is
split, into min(M, batch) near-equal chunks; a graph captured at a fixed micro-batch size takes
an input whose first dimension is M times the captured one. Other inputs go whole to every chunk.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.fx

from ..errors import AccelcError
from ..partition.partitioner import build_stage_module
from ..partition.plan import Plan

log = logging.getLogger(__name__)


class StageError(AccelcError):
    """A pipeline stage raised, or a stage did not answer within the timeout."""


@dataclass
class Interval:
    stage: int
    microbatch: int
    start_s: float
    end_s: float


@dataclass
class Timeline:
    """Busy intervals of each stage per micro-batch for one run (seconds from the run's start)."""

    stages: int
    microbatches: int
    intervals: list[Interval] = field(default_factory=list)
    wall_s: float = 0.0

    def busy_s(self) -> list[float]:
        busy = [0.0] * self.stages
        for iv in self.intervals:
            busy[iv.stage] += iv.end_s - iv.start_s
        return busy

    def to_chrome_trace(self) -> dict:
        events = [{"name": f"mb {iv.microbatch}", "ph": "X", "pid": 0, "tid": iv.stage,
                   "ts": iv.start_s * 1e6, "dur": (iv.end_s - iv.start_s) * 1e6, "args": {"microbatch": iv.microbatch}}
                  for iv in self.intervals]
        events += [{"name": "thread_name", "ph": "M", "pid": 0, "tid": s, "args": {"name": f"stage {s}"}}
                   for s in range(self.stages)]
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def save_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_chrome_trace(), f)


_STOP = object()


class PipelineExecutor(torch.nn.Module):
    """The plan's stages as one module, callable like the captured graph."""

    def __init__(self, gm: torch.fx.GraphModule, plan: Plan, microbatches: int = 1, timeout_s: float = 300.0):
        super().__init__()
        self.plan = plan
        self.microbatches = max(1, int(microbatches))
        self.timeout_s = timeout_s
        self.devices = [torch.device(s.device) for s in plan.stages]
        self.stage_modules = torch.nn.ModuleList(
            build_stage_module(gm, plan, s.index, device=s.device if torch.device(s.device).type != "cpu" else None)
            for s in plan.stages)
        self.input_shapes = [tuple(n.meta["val"].shape) if isinstance(n.meta.get("val"), torch.Tensor) else None
                             for n in gm.graph.nodes if n.op == "placeholder"]
        self._codegen = gm.graph._codegen  # flattens pytree inputs / rebuilds the output structure
        self.streams = [torch.cuda.Stream(device=d) if d.type == "cuda" else None for d in self.devices]
        self.timeline: Timeline | None = None

    # -- splitting and merging micro-batches -------------------------------------------------
    def _split(self, flat: list) -> list[list]:
        M = self.microbatches
        batched = [isinstance(x, torch.Tensor) and bool(shape) and x.dim() > 0 and (
            isinstance(shape[0], torch.SymInt) or x.shape[0] == shape[0] * M) for x, shape in zip(flat, self.input_shapes)]
        # Nothing to split (a static graph called at its micro-batch size): one chunk. A batch
        # smaller than M gives fewer chunks, none empty.
        M = min([M] + [x.shape[0] for x, b in zip(flat, batched) if b]) if any(batched) else 1
        chunks: list[list] = [[] for _ in range(M)]
        for x, is_batched in zip(flat, batched):
            parts = torch.tensor_split(x, M, dim=0) if M > 1 and is_batched else [x] * M
            for m in range(M):
                chunks[m].append(parts[m])
        return chunks

    def _merge(self, outs: list[list]) -> list:
        if len(outs) == 1:
            return outs[0]
        return [torch.cat([o[i] for o in outs], dim=0) if isinstance(outs[0][i], torch.Tensor) and outs[0][i].dim()
                else outs[0][i] for i in range(len(outs[0]))]

    # -- one stage on one micro-batch ----------------------------------------------------------
    def _run_stage(self, s: int, values: list, event):
        stage, device, stream = self.plan.stages[s], self.devices[s], self.streams[s]
        if stream is None:
            if event is not None:  # a CUDA producer: wait for its work before reading on the host
                _wait_event(event, self.timeout_s, s, stage)
            values = [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]
            return list(self.stage_modules[s](*values)), None
        with torch.cuda.stream(stream):
            if event is not None:
                stream.wait_event(event)
            moved = []
            for v in values:
                if isinstance(v, torch.Tensor):
                    v = v.to(device, non_blocking=True)
                    v.record_stream(stream)  # the allocator must not reuse it before this stream is done
                moved.append(v)
            outs = list(self.stage_modules[s](*moved))
            done = torch.cuda.Event()
            done.record(stream)
        return outs, done

    def _stage_error(self, s: int, exc: BaseException) -> StageError:
        stage = self.plan.stages[s]
        nodes = ", ".join(stage.nodes[:8]) + (f", ... ({len(stage.nodes)} nodes)" if len(stage.nodes) > 8 else "")
        return StageError(f"stage {s} on {stage.device} failed: {type(exc).__name__}: {exc} [nodes: {nodes}]")

    # -- the run -------------------------------------------------------------------------------
    def forward(self, *args):
        flat = list(self._codegen.process_inputs(*args))
        chunks = self._split(flat)
        S, M = len(self.plan.stages), len(chunks)
        timeline = Timeline(S, M)
        t0 = time.perf_counter()
        inputs0 = [dict(zip(self.plan.graph_inputs, c)) for c in chunks]
        with torch.inference_mode():
            if S == 1 or M == 1 and all(d.type == "cpu" for d in self.devices):
                results = self._run_sequential(inputs0, timeline, t0)
            else:
                results = self._run_pipelined(inputs0, timeline, t0)
        timeline.wall_s = time.perf_counter() - t0
        self.timeline = timeline
        outs = [[env[name] if name is not None else None for name in self.plan.graph_outputs] for env in results]
        if self.devices[-1].type == "cuda" and self.streams[-1] is not None:
            torch.cuda.current_stream(self.devices[-1]).wait_stream(self.streams[-1])
        return self._codegen.process_outputs(self._merge(outs))

    def _run_sequential(self, envs: list[dict], timeline: Timeline, t0: float) -> list[dict]:
        results = []
        for m, env in enumerate(envs):
            event = None
            for s, stage in enumerate(self.plan.stages):
                start = time.perf_counter()
                try:
                    outs, event = self._run_stage(s, [env[i] for i in stage.inputs], event)
                except StageError:
                    raise
                except Exception as exc:
                    raise self._stage_error(s, exc) from exc
                timeline.intervals.append(Interval(s, m, start - t0, time.perf_counter() - t0))
                env = dict(zip(stage.outputs, outs))
            if event is not None:
                _wait_event(event, self.timeout_s, len(self.plan.stages) - 1, self.plan.stages[-1])
            results.append(env)
        return results

    def _run_pipelined(self, envs: list[dict], timeline: Timeline, t0: float) -> list[dict]:
        S = len(self.plan.stages)
        queues = [queue.Queue() for _ in range(S + 1)]
        stop = threading.Event()
        errors: list[StageError] = []
        lock = threading.Lock()
        caller_threads = torch.get_num_threads()

        def worker(s: int) -> None:
            stage = self.plan.stages[s]
            if self.devices[s].type == "cpu":
                torch.set_num_threads(max(1, stage.threads))  # this thread's intra-op team
            with torch.inference_mode():
                while not stop.is_set():
                    try:
                        item = queues[s].get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if item is _STOP:
                        queues[s + 1].put(_STOP)
                        return
                    m, env, event = item
                    start = time.perf_counter()
                    try:
                        outs, event = self._run_stage(s, [env[i] for i in stage.inputs], event)
                    except Exception as exc:  # reported to the caller, which stops every stage
                        err = exc if isinstance(exc, StageError) else self._stage_error(s, exc)
                        err.__cause__ = exc
                        with lock:
                            errors.append(err)
                        stop.set()
                        queues[S].put(_STOP)
                        return
                    with lock:
                        timeline.intervals.append(Interval(s, m, start - t0, time.perf_counter() - t0))
                    queues[s + 1].put((m, dict(zip(stage.outputs, outs)), event))

        threads = [threading.Thread(target=worker, args=(s,), name=f"accelc-stage-{s}", daemon=True) for s in range(S)]
        for t in threads:
            t.start()
        for m, env in enumerate(envs):
            queues[0].put((m, env, None))
        queues[0].put(_STOP)
        results: dict[int, dict] = {}
        deadline = time.perf_counter() + self.timeout_s
        try:
            while len(results) < len(envs) and not errors:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise StageError(f"pipeline did not finish within {self.timeout_s:.0f} s "
                                     f"({len(results)}/{len(envs)} micro-batches done); raise timeout_s or check the stages")
                try:
                    item = queues[S].get(timeout=min(remaining, 0.1))
                except queue.Empty:
                    continue
                if item is _STOP:
                    continue
                m, env, event = item
                if event is not None:
                    _wait_event(event, self.timeout_s, S - 1, self.plan.stages[-1])
                results[m] = env
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=self.timeout_s)
            torch.set_num_threads(caller_threads)
            alive = [t.name for t in threads if t.is_alive()]
            if alive:
                log.warning("stage threads still running after the timeout: %s", alive)
        if errors:
            raise errors[0]
        return [results[m] for m in range(len(envs))]


def _wait_event(event, timeout_s: float, s: int, stage) -> None:
    """Wait for a CUDA event without blocking forever."""
    deadline = time.perf_counter() + timeout_s
    while not event.query():
        if time.perf_counter() > deadline:
            raise StageError(f"stage {s} on {stage.device} did not finish within {timeout_s:.0f} s")
        time.sleep(1e-4)


def build_executor(gm: torch.fx.GraphModule, plan: Plan, microbatches: int = 1, timeout_s: float = 300.0) -> PipelineExecutor:
    """An nn.Module running ``plan`` on ``gm``: sequential for one micro-batch on CPU, pipelined otherwise."""
    return PipelineExecutor(gm, plan, microbatches=microbatches, timeout_s=timeout_s)
