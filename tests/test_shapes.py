"""Dynamic sizes: what is inferred, what the guard accepts, and what a bad call is told."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import accelc
from accelc.errors import AccelcFallbackWarning, InputMismatchError, UserInputError
from accelc.shapes import InputSpec, Signature, capture_dims, parse_dynamic, probe_points


class Tokens(nn.Module):
    """Embedding + linear over (batch, seq) token ids and a mask: batch and seq both dynamic."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.pos = nn.Parameter(torch.randn(32, 16))
        self.proj = nn.Linear(16, 8)

    def forward(self, ids, mask):
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        h = h * mask.unsqueeze(-1)
        return self.proj(h).sum(dim=1)


class FlattenHead(nn.Module):
    """A conv whose Linear head pins H and W; only the batch may vary."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.head(torch.flatten(torch.relu(self.conv(x)), 1))


def token_inputs(batch=1, seq=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (batch, seq), generator=g), torch.ones(batch, seq, dtype=torch.int64)


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(0)
    model = Tokens().eval()
    return model, accelc.accelerate(model, token_inputs(), backend="torch")


def test_candidates_are_batch_seq_and_image_sizes():
    ids, mask = token_inputs()
    image, feats = torch.randn(1, 3, 8, 8), torch.randn(2, 7, 16)
    dims = capture_dims((ids, mask, image, feats), parse_dynamic(None))
    assert dims == [{0: "batch", 1: "seq"}, {0: "batch", 1: "seq"}, {0: "batch", 2: "height", 3: "width"}, {0: "batch"}]
    assert capture_dims((ids, image), parse_dynamic({"seq": False, "height": False})) == [{0: "batch"}, {0: "batch", 3: "width"}]
    assert capture_dims((ids,), parse_dynamic(False)) == [{}]


def test_the_graph_decides_what_stays_dynamic(tokens):
    _, fast = tokens
    spec = fast.report["dynamic"]
    assert [i["shape"] for i in spec["inputs"]] == [["batch", "seq"], ["batch", "seq"]]
    assert spec["dynamic"]["seq"] == [1, 32]  # bounded by the position table, as torch.export derived
    assert spec["dynamic"]["batch"][0] == 1
    seqs = {p["seq"] for p in spec["verified_at"]}
    batches = {p["batch"] for p in spec["verified_at"]}
    assert {1, 32} <= seqs and {1, 3, 8} <= batches

    torch.manual_seed(0)
    pinned = accelc.accelerate(FlattenHead().eval(), (torch.randn(1, 3, 8, 8),), backend="torch")
    assert pinned.report["dynamic"]["inputs"][0]["shape"] == ["batch", 3, 8, 8]


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 5), (8, 32), (2, 17)])
def test_other_shapes_give_eager_answers(tokens, batch, seq):
    model, fast = tokens
    x = token_inputs(batch, seq, seed=batch * 100 + seq)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccelcFallbackWarning)  # these are inside the signature: no fallback
        got = fast(*x)
    torch.testing.assert_close(got, model(*x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("args,expected", [
    (lambda ids, mask: (ids,), "1 inputs given where the model was captured with 2"),
    (lambda ids, mask: (ids.float(), mask), "input 0 (ids): expected int64 of shape (batch, seq)"),
    (lambda ids, mask: (ids[0], mask), "got int64 of shape (6,)"),
    (lambda ids, mask: (torch.randint(0, 50, (1, 33)), torch.ones(1, 33, dtype=torch.int64)), "seq 33 is outside seq in 1..32"),
])
def test_bad_calls_raise_one_line_errors_where_eager_raises(tokens, args, expected):
    _, fast = tokens
    with pytest.raises(InputMismatchError) as info:
        fast(*args(*token_inputs()))
    message = str(info.value)
    assert expected in message and "\n" not in message and message.startswith("accelc: ")


def test_a_call_eager_serves_runs_eagerly_with_one_warning(tokens):
    model, fast = tokens
    ids, mask = token_inputs()
    x = (ids, mask.float())  # float mask: eager runs it, the graph was verified for int64
    with pytest.warns(AccelcFallbackWarning, match="input 1 \\(mask\\).*running the eager model"):
        got = fast(*x)
    torch.testing.assert_close(got, model(*x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccelcFallbackWarning)
        fast(*x)  # the same reason warns once


def test_wrong_channel_count_is_refused_on_the_cnn():
    torch.manual_seed(0)
    fast = accelc.accelerate(FlattenHead().eval(), (torch.randn(2, 3, 8, 8),), backend="torch")
    with pytest.raises(InputMismatchError, match=r"input 0 \(x\): expected float32 of shape \(batch, 3, 8, 8\).*got float32 of shape \(2, 4, 8, 8\)"):
        fast(torch.randn(2, 4, 8, 8))


def test_user_ranges_narrow_the_signature():
    torch.manual_seed(0)
    model = Tokens().eval()
    fast = accelc.accelerate(model, token_inputs(2, 6), backend="torch", dynamic={"seq": (4, 16), "batch": "1..4"})
    assert fast.report["dynamic"]["dynamic"]["seq"] == [4, 16]
    assert fast.report["dynamic"]["dynamic"]["batch"] == [1, 4]
    assert all(4 <= p["seq"] <= 16 and p["batch"] <= 4 for p in fast.report["dynamic"]["verified_at"])
    x = token_inputs(2, 20)
    with pytest.warns(AccelcFallbackWarning, match="seq 20 is outside seq in 4..16.*--dynamic seq=1..N"):
        torch.testing.assert_close(fast(*x), model(*x))
    static = accelc.accelerate(model, token_inputs(2, 6), backend="torch", dynamic=False)
    assert static.report["dynamic"]["dynamic"] == {}


@pytest.mark.parametrize("bad", ["seq", "seq=9..2", "colour=1..3", {"seq": (0, 4)}, 3])
def test_bad_dynamic_specs_are_user_errors(bad):
    with pytest.raises(UserInputError):
        parse_dynamic(bad)


def test_bad_dynamic_spec_fails_before_capture(monkeypatch):
    import accelc.api

    monkeypatch.setattr(accelc.api, "capture", lambda *a, **k: pytest.fail("captured before validating dynamic="))
    with pytest.raises(UserInputError, match="unknown dynamic axis"):
        accelc.accelerate(Tokens().eval(), token_inputs(), dynamic={"colour": (1, 2)})


def test_tied_sizes_must_agree():
    signature = Signature([InputSpec("a", torch.float32, ("batch", 4)), InputSpec("b", torch.float32, ("batch",))],
                          {"batch": (1, None)})
    assert signature.mismatch((torch.zeros(3, 4), torch.zeros(3))) is None
    assert "its batch is 2 where an earlier input's is 3" in signature.mismatch((torch.zeros(3, 4), torch.zeros(2)))
    assert Signature.from_dict(signature.as_dict()).mismatch((torch.zeros(5, 4), torch.zeros(5))) is None


def test_sizes_of_one_axis_verified_only_equal_must_agree():
    """Two inputs' batches the graph leaves independent (a mask it would broadcast) but that were
    equal at every verified point are tied: a call where they differ is outside the signature,
    after save and load too. Sizes of different axes (height, width) are never tied."""
    from accelc.shapes import verified_ties

    signature = Signature([InputSpec("ids", torch.int64, ("batch", "seq")), InputSpec("mask", torch.int64, ("batch_1", "seq")),
                           InputSpec("image", torch.float32, ("batch_2", 3, "height", "width"))],
                          {"batch": (1, None), "batch_1": (1, None), "batch_2": (1, None), "seq": (1, 64),
                           "height": (1, None), "width": (1, None)})
    points = [{"batch": b, "batch_1": b, "batch_2": b, "seq": s, "height": h, "width": h}
              for b, s, h in ((1, 6, 8), (3, 1, 4), (8, 64, 16))]
    tied = Signature.from_dict(verified_ties(signature, points).as_dict())
    assert tied.ties == (("batch", "batch_1", "batch_2"),)

    def call(ids_batch, mask_batch, side=(8, 8)):
        return (torch.zeros(ids_batch, 6, dtype=torch.int64), torch.zeros(mask_batch, 6, dtype=torch.int64),
                torch.zeros(ids_batch, 3, *side))

    assert tied.mismatch(call(3, 3)) is None and tied.mismatch(call(3, 3, side=(8, 12))) is None
    why = tied.mismatch(call(3, 1))
    assert why.untied and "input 1 (mask)" in why and "its batch_1 is 1 where batch is 3" in why, why
    assert verified_ties(signature, points[:1] + [dict(points[1], batch_1=1)]).ties == (("batch", "batch_2"),)


def test_a_mask_batch_other_than_the_ids_batch_is_never_answered_unverified(tmp_path):
    """BERT takes input_ids and an attention_mask whose batch torch.export leaves free (it would
    broadcast): accelc verified them equal only, so a mask of another batch runs eagerly (eager
    raises, or answers) and the artifact refuses it; OpenVINO once answered such calls."""
    from test_bench import load_sample

    torch.manual_seed(0)
    model, inputs = load_sample("bert")
    fast = accelc.accelerate(model, inputs, backend="onnxruntime")
    ids, mask, types = (torch.randint(0, 50, (3, 16)), torch.ones(2, 16, dtype=torch.long),
                        torch.zeros(3, 16, dtype=torch.long))
    mask[:, 12:] = 0  # padding: the model then gathers per row, and eager raises on the short mask
    with pytest.raises(Exception):
        model(ids, mask, types)  # eager raises: so must accelc, with its own error
    with pytest.raises(InputMismatchError, match="verified these sizes only equal"):
        fast(ids, mask, types)
    fast.save(str(tmp_path / "bert"))
    with pytest.raises(InputMismatchError, match="verified these sizes only equal"):
        accelc.load(str(tmp_path / "bert"))(ids, torch.ones(1, 16, dtype=torch.long), types)


def test_probe_points_cover_each_range():
    signature = Signature([InputSpec("ids", torch.int64, ("batch", "seq"))], {"batch": (1, None), "seq": (1, 512)})
    final = probe_points(signature, (torch.zeros(1, 128, dtype=torch.int64),), final=True)
    assert final == [{"batch": 1, "seq": 1}, {"batch": 3, "seq": 256}, {"batch": 8, "seq": 128}, {"batch": 1, "seq": 512}]
    cheap = probe_points(signature, (torch.zeros(1, 128, dtype=torch.int64),), final=False)
    assert cheap == [{"batch": 1, "seq": 1}, {"batch": 3, "seq": 128}]
