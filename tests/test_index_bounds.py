"""Calls past an embedding table are refused before a runtime sees them: a position table bounds
the sequence range, a token table bounds the token ids' values (accelc.index_bounds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import accelc
from accelc.errors import InputMismatchError
from accelc.index_bounds import SizeBound, ValueBound, table_bounds
from test_dynamic_property import inputs_of, small_sample


class Positions(nn.Module):
    """GPT-2's layout: token and position embeddings, positions as arange(seq) + an offset."""

    def __init__(self, offset=0):
        super().__init__()
        self.offset = offset
        self.tokens = nn.Embedding(50, 8)
        self.positions = nn.Embedding(20, 8)

    def forward(self, ids):
        where = torch.arange(ids.shape[1]).unsqueeze(0) + self.offset
        return self.tokens(ids) + self.positions(where)


class Mixed(nn.Module):
    """Floats only, and indices computed from values: no bound can be read off the graph."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 4)

    def forward(self, x):
        return self.table((x.abs() * 3).long().clamp(0, 9)).sum(-1)


def _captured(model, *inputs):
    return accelc.accelerate(model.eval(), inputs, backend="torch")


@pytest.mark.parametrize("offset", [0, 2])
def test_position_and_token_tables_bound_the_signature(offset):
    fast = _captured(Positions(offset), torch.randint(0, 50, (1, 6)))
    sizes, values = table_bounds(fast.graph_module)
    assert sizes == [SizeBound(0, 1, 20 - offset, "positions.weight")]
    assert values == [ValueBound(0, 50, "tokens.weight")]
    assert fast.report["dynamic"]["dynamic"]["seq"] == [1, 20 - offset]
    assert fast.report["dynamic"]["inputs"][0]["values_below"] == 50
    assert any("positions.weight" in why for why in fast.report["dynamic"]["narrowed"])
    with torch.inference_mode():
        fast(torch.randint(0, 50, (2, 20 - offset)))  # the last size the table serves
        for bad, what in [(torch.randint(0, 50, (1, 21 - offset)), "outside seq in 1.."),
                          (torch.tensor([[1, 50, 2]]), "values are in 1..50"),
                          (torch.tensor([[1, -1, 2]]), "values are in -1..2")]:
            with pytest.raises(InputMismatchError, match=what):
                fast(bad)


def test_no_bound_where_the_graph_does_not_state_one():
    fast = _captured(Mixed(), torch.randn(2, 5))
    assert table_bounds(fast.graph_module) == ([], [])
    assert fast.report["dynamic"]["narrowed"] == []


def test_bounds_survive_save_and_load(tmp_path):
    fast = _captured(Positions(), torch.randint(0, 50, (1, 6)))
    fast.save(str(tmp_path / "a"))
    loaded = accelc.load(str(tmp_path / "a"))
    with pytest.raises(InputMismatchError, match="values are in"), torch.inference_mode():
        loaded(torch.tensor([[1, 99]]))
    with pytest.raises(InputMismatchError, match="outside seq"), torch.inference_mode():
        loaded(torch.randint(0, 50, (1, 21)))


def test_gpt2_on_openvino_refuses_a_sequence_past_its_positions():
    """OpenVINO's Gather answers (zeros) past the table where eager raises: the bound found in the
    real GPT-2 capture is what keeps that from being a wrong answer."""
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    model, example = small_sample("gpt2")
    fast = accelc.accelerate(model, example, backend="openvino")
    rows = model.gpt2.transformer.wpe.weight.shape[0]
    assert fast.report["backend"] == "openvino" and fast.report["dynamic"]["dynamic"]["seq"] == [1, rows]
    with torch.inference_mode():
        fast(*inputs_of(example, 2, rows, 0, seed=3))
        with pytest.raises(InputMismatchError, match="the model itself raised IndexError"):
            fast(*inputs_of(example, 1, rows + 1, 0, seed=3))
