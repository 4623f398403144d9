"""compare_outputs, the judge of every check: it must agree with the plain float64 reading of its
rule, |got - ref| <= atol·max(1, max|ref|) + rtol·|ref| everywhere, NaN only where the reference
has NaN, on any values (it computes in fp32, and in one reduction, for speed)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accelc.verify import compare_outputs, tolerance, tolerance_for_precision

SPECIALS = [0.0, -0.0, 1.0, -1.0, 1e-30, 3e38, -3e38, math.inf, -math.inf, math.nan]


def _rule(got: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float) -> bool:
    got, ref = got.double(), ref.double()
    if not torch.equal(torch.isnan(got), torch.isnan(ref)):
        return False
    finite = ~torch.isnan(ref)
    diff, mag = (got - ref).abs()[finite], ref.abs()[finite]
    if diff.numel() == 0:
        return True
    scale = max(1.0, float(mag.max()))
    return bool((diff <= atol * scale + rtol * mag).all()) and math.isfinite(float(diff.max()))


values = st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from(SPECIALS))


@settings(max_examples=300, deadline=None)
@given(ref=st.lists(values, min_size=1, max_size=12), noise=st.lists(st.floats(-2e-3, 2e-3), min_size=12, max_size=12),
       flip=st.integers(0, 11), special=st.sampled_from(SPECIALS))
def test_agrees_with_the_rule_read_in_float64(ref, noise, flip, special):
    want = torch.tensor(ref, dtype=torch.float32)
    got = want * (1 + torch.tensor(noise[: len(ref)], dtype=torch.float32)) + torch.tensor(noise[: len(ref)]) * 0.1
    if flip < len(ref):
        got[flip] = special  # sometimes a wild value (inf, NaN, huge) where the reference has another
    rtol, atol = tolerance(torch.float32)
    assert compare_outputs(got, want).ok == _rule(got, want, rtol, atol)


def test_reports_the_error_and_names_the_output_and_its_dtype():
    ref = torch.tensor([0.5, -2.0, 4.0], dtype=torch.bfloat16)
    ok = compare_outputs(ref + 0.01, ref, tolerance_for_precision("bf16"))
    assert ok.ok and ok.max_abs_error == pytest.approx(0.0, abs=0.05)
    bad = compare_outputs([ref, ref * 3], [ref, ref], tolerance_for_precision("bf16"))
    assert not bad.ok and bad.message.startswith("output 1 (torch.bfloat16): max abs error 8 exceeds")
    assert bad.relative_error == pytest.approx(2.0)


def test_nan_only_where_the_reference_has_it():
    ref = torch.tensor([1.0, math.nan, 3.0])
    assert compare_outputs(ref.clone(), ref).ok
    assert not compare_outputs(torch.tensor([1.0, 2.0, 3.0]), ref).ok
    assert "NaN" in compare_outputs(torch.tensor([math.nan, math.nan, 3.0]), ref).message
