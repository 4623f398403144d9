"""Torch tensors as the numpy arrays ONNX Runtime and OpenVINO read, on every call."""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(x):
    """``x`` as a numpy array: a view of a CPU tensor's memory where one can be (the common case,
    and the cheapest: no copy), else a contiguous CPU copy."""
    if type(x) is torch.Tensor and x.is_cpu and not x.requires_grad and x.is_contiguous():
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().contiguous().numpy()
    return np.asarray(x)


__all__ = ["to_numpy"]
