"""The same plan over ``torch.distributed.pipelining``: one process per stage, GPipe schedule.

Each rank builds its stage's GraphModule from the plan (partitioner.build_stage_module), wraps
it in a ``PipelineStage`` whose input/output shapes come from the captured metadata (so no
shape-inference round trip), and runs ``ScheduleGPipe.eval`` (forward only). Rank 0 feeds the
whole batch, which the schedule splits into micro-batches along dimension 0; the last rank gets
the merged outputs. The graph must be captured at the micro-batch size (see pipeline.py).

Backends: gloo for CPU stages, NCCL when every stage is on CUDA. Across machines::

    # on each of 2 hosts (node_rank 0 and 1), one stage per process
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --rdzv-endpoint HOST0:29500 \\
        -m accelc.runtime.distributed --program model.pt2 --plan plan.json \\
        --inputs inputs.pt --microbatches 4 --out outputs.pt
"""

from __future__ import annotations

import argparse
import datetime
import logging

import torch
import torch.distributed as dist
import sympy
import torch.fx

from ..errors import UserInputError
from ..partition.partitioner import build_stage_module, fit_plan
from ..partition.plan import Plan

log = logging.getLogger(__name__)


def _meta_args(gm: torch.fx.GraphModule, names: list[str], device: torch.device, sizes: dict) -> tuple:
    """Empty tensors shaped like the values ``names`` at this run's micro-batch: PipelineStage
    needs concrete shapes, and a graph with a dynamic batch (or sequence) has symbols in them,
    which ``sizes`` (symbol -> size, from :func:`_symbol_sizes`) resolves."""
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for name in names:
        val = nodes[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UserInputError(f"value {name!r} crosses a stage boundary but is not a tensor; cut elsewhere")
        shape = []
        for dim in val.shape:
            if isinstance(dim, torch.SymInt):
                dim = sympy.sympify(sympy.sympify(dim.node.expr).xreplace(sizes))
                if not dim.is_number:
                    raise UserInputError(f"the size of {name!r} ({dim}) does not follow from the input sizes; "
                                         "capture with --static to run it across processes")
            shape.append(int(dim))
        out.append(torch.empty(tuple(shape), dtype=val.dtype, device=device))
    return tuple(out)


def _symbol_sizes(gm: torch.fx.GraphModule, input_shapes: list[tuple], microbatches: int) -> dict:
    """Each size symbol of the graph's inputs, bound to its size in one micro-batch of a call
    whose inputs have ``input_shapes`` (dimension 0 split ``microbatches`` ways, evenly)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    sizes = {}
    for node, shape in zip(placeholders, input_shapes):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        if shape and shape[0] % microbatches:
            raise UserInputError(f"input {node.name} has batch {shape[0]}, which {microbatches} micro-batches do not "
                                 "split evenly; give a batch divisible by --microbatches")
        micro = (shape[0] // microbatches, *shape[1:]) if shape else shape
        for dim, size in zip(val.shape, micro):
            if isinstance(dim, torch.SymInt) and sympy.sympify(dim.node.expr).is_Symbol:
                sizes[dim.node.expr] = size
    return sizes


class _ContiguousOutputs(torch.nn.Module):
    """Send-ready stage outputs: the collectives need contiguous tensors, and a channels-last
    activation at a cut is not (same values, different strides)."""

    def __init__(self, stage: torch.nn.Module):
        super().__init__()
        self.stage = stage

    def forward(self, *args):
        out = self.stage(*args)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return type(out)(x.contiguous() if isinstance(x, torch.Tensor) else x for x in out)


def backend_for(plan: Plan) -> str:
    return "nccl" if all(torch.device(s.device).type == "cuda" for s in plan.stages) else "gloo"


def run_stage(gm: torch.fx.GraphModule, plan: Plan, inputs: tuple | None, microbatches: int,
              rank: int | None = None, group=None):
    """Run this rank's stage of ``plan``; returns the outputs tuple on the last rank, else None.

    The process group must be initialised (``dist.init_process_group``) with one rank per stage.
    ``inputs`` (the whole batch) are given on rank 0; their shapes are sent to every rank, which
    shapes its stage's buffers for them.
    """
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    rank = dist.get_rank(group) if rank is None else rank
    world = dist.get_world_size(group)
    if world != plan.num_stages:
        raise UserInputError(f"plan has {plan.num_stages} stages but {world} processes; launch one process per stage")
    stage_plan = plan.stages[rank]
    device = torch.device(stage_plan.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif stage_plan.threads:
        torch.set_num_threads(stage_plan.threads)
    shapes = [[tuple(x.shape) if isinstance(x, torch.Tensor) else () for x in inputs] if rank == 0 else None]
    dist.broadcast_object_list(shapes, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    sizes = _symbol_sizes(gm, shapes[0], microbatches)
    module = _ContiguousOutputs(build_stage_module(gm, plan, rank, device=device if device.type != "cpu" else None))
    stage = PipelineStage(
        module, rank, world, device,
        input_args=_meta_args(gm, stage_plan.inputs, device, sizes),
        output_args=_meta_args(gm, stage_plan.outputs, device, sizes),
        group=group,
    )
    schedule = ScheduleGPipe(stage, n_microbatches=microbatches)
    with torch.no_grad():
        if rank == 0:
            args = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
            out = schedule.eval(*args)
        else:
            out = schedule.eval()
    if rank == world - 1:
        return out if isinstance(out, tuple) else (out,)
    return None


def main(argv: list[str] | None = None) -> None:
    """torchrun entry point: load the program and plan, run this rank's stage, save outputs."""
    from ..capture import graph_module_from_program

    parser = argparse.ArgumentParser(prog="python -m accelc.runtime.distributed")
    parser.add_argument("--program", required=True, help="model.pt2 (torch.export.save of the captured program)")
    parser.add_argument("--plan", required=True, help="plan.json with one stage per process")
    parser.add_argument("--inputs", required=True, help="torch.save'd tuple of whole-batch inputs (read on rank 0)")
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--out", default=None, help="where the last rank saves the outputs")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    ns = parser.parse_args(argv)
    plan = Plan.load(ns.plan)
    dist.init_process_group(backend_for(plan), timeout=datetime.timedelta(seconds=ns.timeout_s))
    try:
        gm = graph_module_from_program(torch.export.load(ns.program))
        plan = fit_plan(gm, plan)  # model.pt2 from an artifact was re-exported: node names may differ
        inputs = tuple(torch.load(ns.inputs, weights_only=True)) if dist.get_rank() == 0 else None
        out = run_stage(gm, plan, inputs, ns.microbatches)
        if out is not None and ns.out:
            torch.save(tuple(o.cpu() for o in out), ns.out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
