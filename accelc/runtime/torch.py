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


class TorchRuntime(torch.nn.Module):
    """Calls the graph under ``inference_mode`` after moving inputs to its device."""

    def __init__(self, graph_module: torch.fx.GraphModule, device: torch.device):
        super().__init__()
        self.graph_module = graph_module
        self.device = device
        self._on_cpu = device.type == "cpu"

    def forward(self, *args):
        # This sits on every call: skip the device move and the mode switch when they are no-ops,
        # since for small models they cost as much as the model itself.
        if not (self._on_cpu and all(not isinstance(x, torch.Tensor) or x.is_cpu for x in args)):
            args = to_device(args, self.device)
        if torch.is_inference_mode_enabled():
            return self.graph_module(*args)
        with torch.inference_mode():
            return self.graph_module(*args)
