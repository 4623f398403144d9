"""Running the stages of :mod:`accelc.stages`: each a list of passes through one PassManager.

    names (accelc.stages.build_pipeline) ─► instances (the registry loads only these) ─►
    PassManager(stage) on the graph, the stage verified at the example and at other sizes

The API runs the graph stage once, the lowering stage once for the PyTorch runtime, and the
ONNX stage (:func:`accelc.onnx.build.build_onnx_runtime`) for ONNX Runtime. Loading an artifact
replays the recorded lowering stage through :func:`lower` as well, so what runs after a load
is what was verified at build.
"""

from __future__ import annotations

import torch

from .pass_base import Pass, PassContext
from .pass_manager import FIRED, PassManager, PassRecord
from .registry import Registry
from .stages import STAGES, Pipeline


def stage_passes(registry: Registry, pipeline: Pipeline, stage: str) -> list[Pass]:
    """Instances of the stage's passes, in order; a plugin that will not load is an error naming it."""
    return [registry.create(STAGES[stage].ir, name) for name in pipeline.names(stage)]


def lower(gm: torch.fx.GraphModule, device: torch.device, example_inputs: tuple, passes: list[Pass],
          signature=None, on_progress=None, refusals: list | None = None,
          reference=None) -> tuple[torch.fx.GraphModule, list[PassRecord]]:
    """The lowering stage: the device's runtime lowerings on ``gm``, verified as a stage (the
    pass manager finds a wrong one) against ``gm``'s answers at the example and (given the
    ``signature`` of a dynamic graph) at other points of its ranges. ``reference``: a :class:`accelc.verify.Verifier` holding ``gm``'s own
    answers on such sets, when the caller has them (the build does; a load computes them)."""
    from .verify import Verifier

    if not passes or not example_inputs:
        return gm, []
    ctx = PassContext(device=device, example_inputs=tuple(example_inputs), stage="lowering",
                      refusals=refusals if refusals is not None else [])
    verifier = reference or Verifier.for_module(gm, tuple(example_inputs), signature=signature)
    return PassManager(passes, verify=True, on_progress=on_progress, stage="lowering").run(gm, ctx, verifier)


def fired_names(records: list[dict]) -> list[str]:
    """The passes of a recorded stage that were kept, in order (what a load replays)."""
    return [r["name"] for r in records if r.get("status") == FIRED]


__all__ = ["stage_passes", "lower", "fired_names"]
