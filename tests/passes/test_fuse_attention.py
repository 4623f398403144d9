"""fuse_attention: hand-written attention in captured transformers becomes scaled_dot_product_attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from accelc.capture import capture
from accelc.verify import compare_outputs, verification_inputs
from accelc.patterns import size_hint
from pass_testing import (baked_sizes, capture_dynamic, captured, captured_dynamic, count_ops, fresh_size, inputs_at_shapes,
                          run_pass, run_pass_at_shapes, shape_env)

aten = torch.ops.aten
SDPA = aten.scaled_dot_product_attention


def _assert_matches_eager(model, gm, inputs, count=3):
    with torch.inference_mode():
        for x in verification_inputs(inputs, count=count, seed=7):
            cmp = compare_outputs(gm(*x), model(*x))
            assert cmp.ok, cmp.message


@pytest.mark.parametrize("sample", ["bert", "gpt2", "vit"])
def test_fires_on_every_attention_block_of_the_samples(sample):
    model, inputs, gm = captured(sample)
    softmaxes = count_ops(gm, aten.softmax, aten._softmax)
    new_gm, record, ctx = run_pass("fuse_attention", gm, inputs)
    assert record.status == "fired", record.reason
    assert record.stats == {"fused": softmaxes, "present": softmaxes}  # small samples: 2 layers
    assert softmaxes == 2 and not ctx.refusals
    assert count_ops(new_gm, SDPA) == 2
    assert count_ops(new_gm, aten.softmax, aten._softmax) == 0
    assert count_ops(new_gm, aten.matmul) == 0
    _assert_matches_eager(model, new_gm, inputs)

    again, record2, _ = run_pass("fuse_attention", new_gm, inputs)  # idempotent
    assert record2.status == "no change" and record2.stats == {"fused": 0, "present": 0}


class _T5Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import T5Config, T5EncoderModel

        torch.manual_seed(0)
        config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          attn_implementation="eager")
        self.t5 = T5EncoderModel(config).eval()

    def forward(self, input_ids, attention_mask):
        return self.t5(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_fires_on_t5_position_bias_without_scaling():
    model = _T5Encoder()
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 12, dtype=torch.int64)
    mask[:, -3:] = 0
    gm = capture(model, (ids, mask)).graph_module
    new_gm, record, _ = run_pass("fuse_attention", gm, (ids, mask))
    assert record.status == "fired" and record.stats == {"fused": 2, "present": 2}
    for node in new_gm.graph.nodes:
        if node.target is SDPA.default:
            assert node.kwargs["scale"] == 1.0  # T5 does not scale; SDPA's default 1/sqrt(E) would be wrong
            assert node.kwargs["attn_mask"] is not None  # position bias + padding mask
    _assert_matches_eager(model, new_gm, (ids, mask))


class _SoftmaxClassifier(nn.Module):
    """Softmax over a non-attention shape: class probabilities, then a matmul as the *right* operand."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.table = nn.Parameter(torch.randn(3, 4))

    def forward(self, x):
        probs = torch.softmax(self.proj(x), dim=-1)
        return probs, self.table @ probs.transpose(-1, -2)


class _AttentionOverQueries(nn.Module):
    """Looks like attention, but the softmax runs over the query axis: not SDPA."""

    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-2) @ v


class _AttentionReturningWeights(nn.Module):
    """output_attentions-style: the probabilities are an output too, so they cannot be fused away."""

    def forward(self, q, k, v):
        probs = torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1)
        return probs @ v, probs


class _ModerateFill(nn.Module):
    """masked_fill with -1e4: a fully masked row would differ additively, so it is refused."""

    def forward(self, q, k, v, keep):
        scores = (q @ k.transpose(-1, -2)).masked_fill(~keep, -1e4)
        return torch.softmax(scores, dim=-1) @ v


def _qkv(*extra):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, 5, 4, generator=g) for _ in range(3)) + extra


@pytest.mark.parametrize(
    "module, inputs, present, reason",
    [
        (_SoftmaxClassifier(), (torch.randn(2, 8),), 0, None),
        (_AttentionOverQueries(), _qkv(), 1, "not the key axis"),
        (_AttentionReturningWeights(), _qkv(), 1, "users"),
        (_ModerateFill(), _qkv(torch.ones(1, 1, 5, 5, dtype=torch.bool)), 1, "fill value"),
    ],
    ids=["classifier-softmax", "softmax-over-queries", "weights-returned", "moderate-fill"],
)
def test_must_not_fire(module, inputs, present, reason):
    gm = capture(module.eval(), inputs).graph_module
    before = count_ops(gm, aten.softmax, aten._softmax)
    new_gm, record, ctx = run_pass("fuse_attention", gm, inputs)
    assert record.status == "no change"
    assert record.stats == {"fused": 0, "present": present}
    assert count_ops(new_gm, SDPA) == 0 and count_ops(new_gm, aten.softmax, aten._softmax) == before
    if reason:
        assert len(ctx.refusals) == 1 and reason in ctx.refusals[0].reason


class _ScaledAfterMask(nn.Module):
    """Mask added before the 1/sqrt(d) scale: the mask must be scaled too."""

    def forward(self, q, k, v, bias):
        return torch.softmax((q @ k.transpose(-1, -2) + bias) / math.sqrt(q.shape[-1]), dim=-1) @ v


def test_scale_after_mask_scales_the_mask():
    inputs = _qkv(torch.randn(1, 1, 5, 5))
    model = _ScaledAfterMask()
    gm = capture(model, inputs).graph_module
    new_gm, record, _ = run_pass("fuse_attention", gm, inputs)
    assert record.stats == {"fused": 1, "present": 1}
    _assert_matches_eager(model, new_gm, inputs)


@pytest.mark.parametrize("sample", ["bert", "gpt2", "vit"])
def test_fires_under_symbolic_shapes(sample):
    # BERT's padding mask and GPT-2's causal mask are [batch, 1, seq, seq], built from symbolic sizes.
    model, inputs, gm = captured_dynamic(sample)
    new_gm, record, ctx = run_pass_at_shapes("fuse_attention", gm, model, inputs_at_shapes(sample, gm, inputs))
    assert record.status == "fired", record.reason
    assert record.stats == {"fused": 2, "present": 2} and not ctx.refusals
    assert count_ops(new_gm, SDPA) == 2 and count_ops(new_gm, aten.softmax, aten._softmax) == 0
    assert not baked_sizes(gm, new_gm)


class _MaskedAttention(nn.Module):
    def forward(self, q, k, v, mask):
        return torch.softmax(q @ k.transpose(-1, -2) * 0.5 + mask, dim=-1) @ v


def test_mask_batch_that_only_the_example_shares_is_refused():
    model = _MaskedAttention()
    inputs, gm = capture_dynamic(model, _qkv(torch.zeros(1, 1, 5, 5)))
    mask = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    val = mask.meta["val"]
    with val.fake_mode:  # as if the mask had a batch of its own, the same as Q's in the example
        mask.meta["val"] = torch.empty(fresh_size(gm, size_hint(val.shape[0]), "mask_batch"), *val.shape[1:])
    guards = len(shape_env(gm).guards)
    new_gm, record, ctx = run_pass("fuse_attention", gm, inputs)
    assert record.status == "no change" and count_ops(new_gm, SDPA) == 0
    assert len(ctx.refusals) == 1 and "does not broadcast" in ctx.refusals[0].reason
    assert len(shape_env(gm).guards) == guards
