"""Conformance: every registered pass over every bundled sample, verified and idempotent.

Each pass runs alone on each sample's fresh capture (small configs), through the PassManager with
verification on, and must (1) not be rolled back or fail, (2) give eager's outputs, and (3) change
nothing when run a second time. The default pipeline as a whole must be a fixed point too: running
it over its own output fires nothing. A pass added to the ``accelc.passes`` entry points is picked
up here without editing this file.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from torch.utils import _pytree as pytree

from accelc.pass_base import PassContext
from accelc.pass_manager import FIRED, UNCHANGED, PassManager
from accelc.stages import DEFAULT_PIPELINE, LOWERING, STAGES
from accelc.registry import GROUP, discover, resolve
from pass_testing import captured, run_pass

SAMPLES = ["cnn", "mlp", "multibranch_cnn", "resnet50", "bert", "gpt2", "vit"]
PASSES = sorted(ep.name for ep in entry_points(group=GROUP))


def _assert_matches_eager(model: torch.nn.Module, gm: torch.fx.GraphModule, inputs: tuple, precision: str) -> None:
    with torch.inference_mode():
        expected = pytree.tree_leaves(model(*inputs))
        got = pytree.tree_leaves(gm(*inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        scale = max(1.0, float(e.abs().max()))
        rtol, atol = (1e-4, 1e-4 * scale) if precision == "fp32" else (5e-2, 5e-2 * scale)
        torch.testing.assert_close(g.float(), e.float(), rtol=rtol, atol=atol)


def test_every_default_pass_is_registered():
    assert set(DEFAULT_PIPELINE) <= set(PASSES)


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_pass_on_sample(pass_name, sample):
    model, inputs, gm = captured(sample)
    new_gm, record, _ = run_pass(pass_name, gm, inputs)
    assert record.status in (FIRED, UNCHANGED), f"{pass_name} on {sample}: {record.status}: {record.reason}"
    _assert_matches_eager(model, new_gm, inputs, "fp32")

    again, second, _ = run_pass(pass_name, new_gm, inputs)
    assert second.status == UNCHANGED, f"{pass_name} is not idempotent on {sample}: second run {second.stats}"


@pytest.mark.parametrize("sample", SAMPLES)
def test_lower_precision_on_sample(sample):
    model, inputs, gm = captured(sample)
    new_gm, record, _ = run_pass("lower_precision", gm, inputs, precision="bf16")
    assert record.status == FIRED, f"lower_precision did not fire on {sample}: {record.reason}"
    _assert_matches_eager(model, new_gm, inputs, "bf16")
    again, second, _ = run_pass("lower_precision", new_gm, inputs, precision="bf16")
    assert second.status == UNCHANGED, second.stats


@pytest.mark.parametrize("sample", SAMPLES)
def test_default_pipeline_is_a_fixed_point(sample):
    model, inputs, gm = captured(sample)
    passes = resolve(DEFAULT_PIPELINE, discover())
    once, records = PassManager(passes, verify=True).run(gm, PassContext(example_inputs=inputs))
    assert all(r.status in (FIRED, UNCHANGED) for r in records), [(r.name, r.status, r.reason) for r in records]
    _assert_matches_eager(model, once, inputs, "fp32")
    twice, records = PassManager(passes, verify=True).run(once, PassContext(example_inputs=inputs))
    assert [r.name for r in records if r.status != UNCHANGED] == []


@pytest.mark.parametrize("sample", ["bert", "resnet50"])
def test_pipelines_under_symbolic_shapes(sample):
    # The default pipeline then the CPU runtime lowerings on a dynamic capture (each pass is
    # verified at other shapes in its own tests): the end result gives eager's answers at other
    # batch sizes and sequence lengths / image sizes, and no pass installed a guard.
    from accelc.verify import Verifier
    from pass_testing import baked_sizes, captured_dynamic, inputs_at_shapes, shape_env

    model, inputs, gm = captured_dynamic(sample)
    input_sets = inputs_at_shapes(sample, gm, inputs)
    guards = len(shape_env(gm).guards)
    passes = resolve(DEFAULT_PIPELINE + STAGES[LOWERING].default_names("cpu"), discover())
    final, records = PassManager(passes, verify=False).run(gm, PassContext(example_inputs=inputs))
    assert all(r.status in (FIRED, UNCHANGED) for r in records), [(r.name, r.status, r.reason) for r in records]
    assert len(shape_env(gm).guards) == guards
    with torch.inference_mode():
        comparison, _ = Verifier(input_sets, [model(*x) for x in input_sets]).check(final)
    assert comparison.ok, comparison.message
    assert not baked_sizes(gm, final)
