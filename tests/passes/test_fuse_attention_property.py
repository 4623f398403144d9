"""Property test: random attention shapes, masks and scales, fused graph vs eager."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from accelc.capture import capture
from accelc.verify import compare_outputs
from pass_testing import count_ops, run_pass

aten = torch.ops.aten


class _Attention(nn.Module):
    def __init__(self, scale_kind: str, mask_kind: str, c: float):
        super().__init__()
        self.scale_kind, self.mask_kind, self.c = scale_kind, mask_kind, c

    def forward(self, q, k, v, mask):
        if self.scale_kind == "q":
            q = q * self.c
        scores = q @ k.transpose(-1, -2)
        if self.scale_kind == "mul":
            scores = scores * self.c
        elif self.scale_kind == "sqrt":
            scores = scores / math.sqrt(q.shape[-1])
        if self.mask_kind == "additive":
            scores = scores + mask
        elif self.mask_kind == "masked_fill":
            scores = scores.masked_fill(~mask, float("-inf"))
        elif self.mask_kind == "where_min":
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) @ v


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    batch=st.integers(1, 2), heads=st.integers(1, 3), tgt=st.integers(1, 7), src=st.integers(1, 7),
    e=st.integers(1, 16), ev=st.integers(1, 16),
    scale_kind=st.sampled_from(["none", "mul", "sqrt", "q"]),
    mask_kind=st.sampled_from(["none", "additive", "masked_fill", "where_min"]),
    mask_heads=st.booleans(), c=st.floats(0.05, 2.0), seed=st.integers(0, 2**16),
)
def test_fused_attention_matches_eager(batch, heads, tgt, src, e, ev, scale_kind, mask_kind, mask_heads, c, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, tgt, e, generator=g)
    k = torch.randn(batch, heads, src, e, generator=g)
    v = torch.randn(batch, heads, src, ev, generator=g)
    mask_shape = (batch, heads if mask_heads else 1, tgt, src)
    if mask_kind == "additive":
        mask = torch.randn(mask_shape, generator=g)
    else:  # boolean keep-mask with at least one key per row (a fully masked row is NaN in eager)
        mask = torch.rand(mask_shape, generator=g) > 0.4
        mask[..., 0] = True
    model = _Attention(scale_kind, mask_kind, c).eval()
    inputs = (q, k, v, mask)
    gm = capture(model, inputs).graph_module
    new_gm, record, ctx = run_pass("fuse_attention", gm, inputs)
    assert record.stats == {"fused": 1, "present": 1}, [r.reason for r in ctx.refusals]
    assert count_ops(new_gm, aten.scaled_dot_product_attention) == 1
    with torch.inference_mode():
        cmp = compare_outputs(new_gm(*inputs), model(*inputs))
    assert cmp.ok, cmp.message
