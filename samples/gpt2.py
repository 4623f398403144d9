"""GPT-2 small language model (transformers ``GPT2LMHeadModel``, ``GPT2Config()`` defaults), random weights.

12 layers, n_embd 768, 12 heads, vocab 50257, tied input/output embeddings.
Input is ``input_ids`` (1, 128) int64; output is the plain ``logits`` tensor
(1, 128, 50257).  ``use_cache=False`` so no KV cache is built or returned.

Attention is forced to the *eager* implementation (explicit causal
``matmul -> softmax -> matmul`` per layer) instead of transformers 5.x's
default ``sdpa``: the model constructor takes no ``attn_implementation``
argument, so it goes in the config (``GPT2Config(attn_implementation="eager")``
sets ``config._attn_implementation``).

``get_model(small=True)`` / ``get_inputs(small=True)``: same architecture with
2 layers, n_embd 64, 4 heads, n_inner 128, vocab 1000, sequence 16.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # accelc / `python x.py` already put it there
    sys.path.insert(0, _HERE)
from _init import randomize_, seed_all  # noqa: E402

SEQ_LEN, SMALL_SEQ_LEN = 128, 16


def get_config(small: bool = False) -> GPT2Config:
    kwargs = dict(attn_implementation="eager", use_cache=False)
    if small:
        kwargs.update(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=128)
        # Defaults are 50256 (outside the small vocab; transformers 5.x warns).
        kwargs.update(bos_token_id=999, eos_token_id=999)
    return GPT2Config(**kwargs)


class GPT2Wrapper(nn.Module):
    """``GPT2LMHeadModel`` returning the plain ``logits`` tensor."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.gpt2 = GPT2LMHeadModel(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt2(input_ids=input_ids, use_cache=False).logits


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = GPT2Wrapper(get_config(small))
    assert model.gpt2.config._attn_implementation == "eager", model.gpt2.config._attn_implementation
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    vocab = get_config(small).vocab_size
    seq = SMALL_SEQ_LEN if small else SEQ_LEN
    return (torch.randint(0, vocab, (1, seq), generator=g, dtype=torch.int64),)


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        out = model(*inputs)
    print("gpt2 output:", tuple(out.shape))
