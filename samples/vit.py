"""ViT-base encoder (transformers ``ViTModel``, ``ViTConfig()`` defaults), random weights.

Image 224, patch 16 (196 patches + CLS = 197 tokens), 12 layers, hidden 768,
12 heads, intermediate 3072.  Input is ``pixel_values`` (1, 3, 224, 224);
outputs are the plain tensors ``(last_hidden_state, pooler_output)`` =
((1, 197, 768), (1, 768)).

Attention is forced to the *eager* implementation (explicit
``matmul -> softmax -> matmul`` per layer) instead of transformers 5.x's
default ``sdpa`` via ``ViTConfig(attn_implementation="eager")`` (the model
constructor takes no ``attn_implementation`` argument).

``get_model(small=True)`` / ``get_inputs(small=True)``: same architecture with
image 64, patch 16 (16 patches + CLS), 2 layers, hidden 64, 4 heads,
intermediate 128.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from transformers import ViTConfig, ViTModel

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # accelc / `python x.py` already put it there
    sys.path.insert(0, _HERE)
from _init import randomize_, seed_all  # noqa: E402


def get_config(small: bool = False) -> ViTConfig:
    kwargs = dict(attn_implementation="eager")
    if small:
        kwargs.update(
            image_size=64,
            patch_size=16,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
        )
    return ViTConfig(**kwargs)


class ViTWrapper(nn.Module):
    """``ViTModel`` returning ``(last_hidden_state, pooler_output)`` as plain tensors."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.vit = ViTModel(config)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vit(pixel_values=pixel_values)
        return out.last_hidden_state, out.pooler_output


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = ViTWrapper(get_config(small))
    assert model.vit.config._attn_implementation == "eager", model.vit.config._attn_implementation
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    size = get_config(small).image_size
    return (torch.randn(1, 3, size, size, generator=g),)


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        outs = model(*inputs)
    print("vit outputs:", [tuple(o.shape) for o in outs])
