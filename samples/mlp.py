"""MLP on (1, 256) features: Linear + ReLU/GELU, a Dropout and a LayerNorm.

``get_model(small=True)`` / ``get_inputs(small=True)`` give a narrower MLP on
(1, 64) for fast tests.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # accelc / `python x.py` already put it there
    sys.path.insert(0, _HERE)
from _init import randomize_, seed_all  # noqa: E402

NUM_CLASSES = 10


class MLP(nn.Module):
    def __init__(self, in_features: int = 256, hidden: int = 512, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(0.1),  # identity in eval mode
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _dims(small: bool) -> tuple[int, int]:
    return (64, 128) if small else (256, 512)


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    in_features, hidden = _dims(small)
    model = MLP(in_features, hidden)
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    in_features, _ = _dims(small)
    return (torch.randn(1, in_features, generator=g),)


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        out = model(*inputs)
    print("mlp output:", tuple(out.shape))
