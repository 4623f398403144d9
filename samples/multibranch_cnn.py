"""Multi-branch CNN (Inception-style): each block runs four parallel conv branches and concatenates.

Branches per block, all from the same input, each conv followed by BatchNorm + ReLU:

* 1x1 conv,
* 1x1 conv -> 3x3 conv,
* 1x1 conv -> 5x5 conv,
* 3x3 max-pool -> 1x1 conv,

then ``cat`` on channels. The branches are independent until the ``cat``, which is what
branch-parallel execution exploits. Input (1, 3, 64, 64); ``small=True`` gives a narrower net on
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


def _cbr(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Block(nn.Module):
    def __init__(self, cin: int, width: int):
        super().__init__()
        self.b1 = nn.Sequential(*_cbr(cin, width, 1))
        self.b3 = nn.Sequential(*_cbr(cin, width, 1), *_cbr(width, width, 3))
        self.b5 = nn.Sequential(*_cbr(cin, width, 1), *_cbr(width, width, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_cbr(cin, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class MultiBranchCNN(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 3, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, width, 3))
        layers: list[nn.Module] = []
        cin = width
        for i in range(blocks):
            layers.append(Block(cin, width))
            cin = 4 * width
            if i < blocks - 1:
                layers.append(nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = MultiBranchCNN(width=8 if small else 32)
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
    print("multibranch_cnn output:", tuple(out.shape))
