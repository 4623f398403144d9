"""BERT-base encoder (transformers ``BertModel``, ``BertConfig()`` defaults), random weights.

12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522.  Inputs are
``input_ids``, ``attention_mask`` and ``token_type_ids``, each (1, 128) int64;
the last 8 positions of the mask are 0 (padding) so the mask actually changes
the result.

Attention is forced to the *eager* implementation (explicit
``matmul -> softmax -> matmul`` per layer) instead of transformers 5.x's
default ``sdpa``: ``BertModel.__init__`` takes no ``attn_implementation``
argument, so it is passed to the config (``BertConfig(attn_implementation=
"eager")``, which sets ``config._attn_implementation``).

The wrapper returns the plain tuple ``(last_hidden_state, pooler_output)``
instead of a ``ModelOutput`` dataclass, so torch.export / ONNX see plain
tensor outputs.

``get_model(small=True)`` / ``get_inputs(small=True)``: same architecture with
2 layers, hidden 64, 4 heads, intermediate 128, vocab 1000, sequence 16.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from transformers import BertConfig, BertModel

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # accelc / `python x.py` already put it there
    sys.path.insert(0, _HERE)
from _init import randomize_, seed_all  # noqa: E402

SEQ_LEN, SMALL_SEQ_LEN = 128, 16
N_PAD, SMALL_N_PAD = 8, 4  # masked-out trailing positions


def get_config(small: bool = False) -> BertConfig:
    kwargs = dict(attn_implementation="eager")
    if small:
        kwargs.update(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
        )
    return BertConfig(**kwargs)


class BertWrapper(nn.Module):
    """``BertModel`` returning ``(last_hidden_state, pooler_output)`` as plain tensors."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        )
        return out.last_hidden_state, out.pooler_output


def get_model(small: bool = False, seed: int = 0) -> nn.Module:
    seed_all(seed)
    model = BertWrapper(get_config(small))
    assert model.bert.config._attn_implementation == "eager", model.bert.config._attn_implementation
    randomize_(model, seed)
    return model.eval()


def get_inputs(small: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed + 1)
    vocab = get_config(small).vocab_size
    seq, n_pad = (SMALL_SEQ_LEN, SMALL_N_PAD) if small else (SEQ_LEN, N_PAD)
    input_ids = torch.randint(0, vocab, (1, seq), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(1, seq, dtype=torch.int64)
    attention_mask[:, seq - n_pad :] = 0
    token_type_ids = torch.zeros(1, seq, dtype=torch.int64)
    return input_ids, attention_mask, token_type_ids


if __name__ == "__main__":
    model, inputs = get_model(), get_inputs()
    with torch.no_grad():
        outs = model(*inputs)
    print("bert outputs:", [tuple(o.shape) for o in outs])
