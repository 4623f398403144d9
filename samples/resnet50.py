"""ResNet-50 image classifier (transformers ``ResNetForImageClassification``), random weights.

``ResNetConfig()`` defaults are ResNet-50: bottleneck blocks, depths
[3, 4, 6, 3], hidden sizes [256, 512, 1024, 2048], stem width 64; here with a
1000-class head.  Convs have no bias and are each followed by BatchNorm2d,
whose running stats and affine parameters are randomised (see ``_init.py``)
so conv/BN folding is really exercised.  Input is ``pixel_values``
(1, 3, 224, 224); output is the plain ``logits`` tensor (1, 1000).

``get_model(small=True)`` / ``get_inputs(small=True)``: same bottleneck
architecture with depths [1, 1, 1, 1], hidden sizes [32, 64, 128, 256], stem
width 16, 10 classes, on (1, 3, 64, 64).
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # accelc / `python x.py` already put it there
    sys.path.insert(0, _HERE)
from _init import randomize_, seed_all  # noqa: E402


def get_config(small: bool = False) -> ResNetConfig:
    if small:
        return ResNetConfig(
            embedding_size=16,
            hidden_sizes=[32, 64, 128, 256],
            depths=[1, 1, 1, 1],
            layer_type="bottleneck",
            num_labels=10,
        )
    return ResNetConfig(num_labels=1000)


class ResNetWrapper(nn.Module):
    """``ResNetForImageClassification`` returning the plain ``logits`` tensor."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.resnet = ResNetForImageClassification(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.resnet(pixel_values=pixel_values).logits


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = ResNetWrapper(get_config(small))
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    size = 64 if small else 224
    return (torch.randn(1, 3, size, size, generator=g),)


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        out = model(*inputs)
    print("resnet50 output:", tuple(out.shape))
