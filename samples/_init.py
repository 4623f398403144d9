"""Seeding and non-trivial parameter initialisation shared by the sample models.

Why this exists
---------------
PyTorch's (and transformers') default initialisation leaves every bias at 0,
every LayerNorm / GroupNorm / BatchNorm weight at 1 and bias at 0, and every
BatchNorm ``running_mean`` / ``running_var`` at 0 / 1.  With those values

* a BatchNorm in eval mode is the identity, a LayerNorm has no affine part and
  a zero bias adds nothing, so exporters and optimisers are free to drop them
  (ONNX exporters and constant folders do exactly that), and the sample no
  longer exercises the node we meant to test;
* folding bugs are hidden: a conv+BN fold that forgets the conv bias, swaps
  ``running_mean`` and ``bias``, or mixes up ``weight / sqrt(var + eps)``
  produces the same numbers as the correct fold when mean = bias = 0 and
  weight = var = 1.

``randomize_`` therefore overwrites those tensors, after the model has been
built, with seeded random but well-conditioned values:

* every parameter named ``bias`` (Linear, Conv, GPT-2 ``Conv1D``, norm
  layers, ...): ``normal(0, bias_std)`` (default ``bias_std = 0.05``);
* every normalisation weight (BatchNorm*, InstanceNorm*, LayerNorm, GroupNorm,
  RMSNorm, and any other module whose class name contains ``Norm`` and that
  holds a 1-D ``weight`` parameter): ``1 + 0.1 * randn``;
* every BatchNorm-style ``running_mean``: ``0.1 * randn``;
* every BatchNorm-style ``running_var``: ``uniform(0.5, 1.5)``.

The values come from a private ``torch.Generator`` seeded with ``seed``, so
the result depends only on the model structure and the seed, not on the global
RNG state, and the global RNG is left untouched.
"""

from __future__ import annotations

import random

import torch
from torch import nn

__all__ = ["randomize_", "seed_all"]

_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


def seed_all(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy (if installed) and torch (CPU and CUDA)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, _NORM_TYPES):
        return True
    w = getattr(module, "weight", None)
    return "Norm" in type(module).__name__ and isinstance(w, nn.Parameter) and w.dim() == 1


def _fill_(t: torch.Tensor, values: torch.Tensor) -> None:
    t.copy_(values.to(device=t.device, dtype=t.dtype))


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, bias_std: float = 0.05) -> nn.Module:
    """Give biases, norm affines and BatchNorm running stats seeded non-trivial values.

    Modifies ``model`` in place and returns it.  See the module docstring for
    why and for the distributions used.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=torch.float32)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.rand(t.shape, generator=gen, dtype=torch.float32)

    # Norm layers first: weight ~ 1 + 0.1 randn, running stats.
    for _, module in model.named_modules():
        if not _is_norm(module):
            continue
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.is_floating_point():
            _fill_(w, 1.0 + 0.1 * randn(w))
        rm = getattr(module, "running_mean", None)
        if isinstance(rm, torch.Tensor) and rm.is_floating_point():
            _fill_(rm, 0.1 * randn(rm))
        rv = getattr(module, "running_var", None)
        if isinstance(rv, torch.Tensor) and rv.is_floating_point():
            _fill_(rv, 0.5 + rand(rv))

    # Every bias, norm biases included.
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias" and p.is_floating_point():
            _fill_(p, bias_std * randn(p))

    return model
