"""The PyTorch runtime: run the optimised ``fx.GraphModule`` as an ordinary module, CPU or CUDA."""

from __future__ import annotations

import torch
import torch.fx


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``--device``; CUDA asked for but absent is a user error, not a crash later."""
    from ..errors import UserInputError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserInputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but CUDA is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


def to_device(inputs: tuple, device: torch.device) -> tuple:
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)


def lower_for_device(graph_module: torch.fx.GraphModule, device: torch.device, example_inputs: tuple):
    """Apply the device's runtime lowerings (``accelc.pipeline.RUNTIME_PIPELINES``), each verified
    against the graph before it like any pass; returns the lowered graph and the pass records."""
    from ..pass_base import PassContext
    from ..pass_manager import PassManager
    from ..pipeline import RUNTIME_PIPELINES
    from ..registry import discover, resolve

    registry = discover()
    names = [n for n in RUNTIME_PIPELINES.get(device.type, []) if n in registry]  # absent plugin: skip
    if not names or not example_inputs:
        return graph_module, []
    ctx = PassContext(device=device, example_inputs=tuple(example_inputs))
    return PassManager(resolve(names, registry), verify=True).run(graph_module, ctx)


class TorchRuntime(torch.nn.Module):
    """Calls the graph under ``inference_mode`` after moving inputs to its device.

    Given example inputs, it first applies the device's runtime lowerings (``lower_for_device``);
    ``graph_module`` stays the portable graph, ``lowered`` is what runs.
    """

    def __init__(self, graph_module: torch.fx.GraphModule, device: torch.device, example_inputs: tuple = ()):
        super().__init__()
        self.graph_module = graph_module
        self.device = device
        self._on_cpu = device.type == "cpu"
        self.lowered, self.lowering_records = lower_for_device(graph_module, device, example_inputs)

    def forward(self, *args):
        # This sits on every call: skip the device move and the mode switch when they are no-ops,
        # since for small models they cost as much as the model itself.
        if not (self._on_cpu and all(not isinstance(x, torch.Tensor) or x.is_cpu for x in args)):
            args = to_device(args, self.device)
        if torch.is_inference_mode_enabled():
            return self.lowered(*args)
        with torch.inference_mode():
            return self.lowered(*args)
