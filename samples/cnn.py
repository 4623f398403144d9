"""Small conv + BatchNorm + ReLU CNN (image classifier), input (1, 3, 64, 64).

Covers the patterns a conv/BN folding pass must handle:

* conv *with* bias followed by BatchNorm (the fold must keep the conv bias),
* conv *without* bias followed by BatchNorm,
* a depthwise conv (groups == channels) and a grouped conv (groups=4),
* max-pool, global average pool, flatten and a Linear head.

``get_model(small=True)`` / ``get_inputs(small=True)`` give a narrower net on
(1, 3, 32, 32) for fast tests.
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


def _block(cin: int, cout: int, *, k: int = 3, stride: int = 1, groups: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, bias=True),                          # conv with bias -> BN
            _block(w, 2 * w, stride=2, bias=False),           # conv without bias -> BN
            _block(2 * w, 2 * w, groups=2 * w, bias=True),    # depthwise 3x3
            _block(2 * w, 4 * w, k=1, bias=False),            # pointwise 1x1
            nn.MaxPool2d(2),
            _block(4 * w, 4 * w, groups=4, bias=True),        # grouped conv
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.head(x)


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = SmallCNN(width=8 if small else 32)
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    size = 32 if small else 64
    return (torch.randn(1, 3, size, size, generator=g),)


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        out = model(*inputs)
    print("cnn output:", tuple(out.shape))
