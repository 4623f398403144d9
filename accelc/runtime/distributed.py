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
import torch.fx

from ..errors import UserInputError
from ..partition.partitioner import build_stage_module, fit_plan
from ..partition.plan import Plan

log = logging.getLogger(__name__)


def _meta_args(gm: torch.fx.GraphModule, names: list[str], device: torch.device) -> tuple:
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for name in names:
        val = nodes[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UserInputError(f"value {name!r} crosses a stage boundary but is not a tensor; cut elsewhere")
        out.append(torch.empty(tuple(val.shape), dtype=val.dtype, device=device))
    return tuple(out)


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
    module = _ContiguousOutputs(build_stage_module(gm, plan, rank, device=device if device.type != "cpu" else None))
    stage = PipelineStage(
        module, rank, world, device,
        input_args=_meta_args(gm, stage_plan.inputs, device),
        output_args=_meta_args(gm, stage_plan.outputs, device),
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
