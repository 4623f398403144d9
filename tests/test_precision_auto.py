"""precision="auto": fp32, bf16 and int8 each checked against eager fp32, the fastest within the
tolerance kept, every candidate's latency and error in the report, at every call's shape."""

from __future__ import annotations

import pytest
import torch

import accelc
from accelc import api
from accelc.backends import DEFAULT_TOLERANCE
from accelc.errors import UserInputError
from test_bench import load_sample


@pytest.fixture(scope="module")
def mlp():
    return load_sample("mlp")


@pytest.fixture(scope="module")
def mlp_auto(mlp):
    model, inputs = mlp
    return accelc.accelerate(model, inputs, precision="auto")


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


def test_keeps_the_fastest_candidate_within_the_default_tolerance(mlp, mlp_auto):
    model, inputs = mlp
    report = mlp_auto.report
    candidates = report["precision_candidates"]
    assert report["precision_tolerance"] == DEFAULT_TOLERANCE
    assert candidates[0]["precision"] == "fp32" and {"int8"} <= {c["precision"] for c in candidates}
    if api.cpu_has_native_bf16():
        assert "bf16" in {c["precision"] for c in candidates}
    (kept,) = [c for c in candidates if c["chosen"]]
    assert report["precision"] == kept["precision"] and report["backend"] == kept["backend"]
    assert kept["max_rel_error"] <= DEFAULT_TOLERANCE
    timed = [c for c in candidates if c["median_ms"] is not None]
    if kept["median_ms"] is None:  # the only one within the tolerance (no bf16, no VNNI): nothing to time
        assert kept["reason"] == "the only one within it" and not timed, candidates
    else:
        assert kept["median_ms"] == min(c["median_ms"] for c in timed)
    for c in candidates:
        assert c["reason"] and (c["chosen"] or c["reason"] == "slower" or "tolerance" in c["reason"]
                                or "unavailable" in c["reason"] or "disagrees" in c["reason"]), c
    # Within the tolerance at other batch sizes too, not only at the example.
    for batch in (1, 3, 8):
        x = torch.randn(batch, *inputs[0].shape[1:])
        with torch.inference_mode():
            ref = model(x)
        assert _relative_error(mlp_auto(x), ref) <= 2 * DEFAULT_TOLERANCE


def test_the_artifact_runs_what_was_kept(mlp, mlp_auto, tmp_path):
    model, inputs = mlp
    mlp_auto.save(str(tmp_path / "out"))
    loaded = accelc.load(str(tmp_path / "out"))
    assert loaded.report["precision"] == mlp_auto.report["precision"]
    x = torch.randn(4, *inputs[0].shape[1:])
    with torch.inference_mode():
        ref = model(x)
    torch.testing.assert_close(loaded(x), mlp_auto(x), rtol=1e-5, atol=1e-6)
    assert _relative_error(loaded(x), ref) <= 2 * DEFAULT_TOLERANCE


def test_a_tolerance_no_lower_precision_meets_keeps_fp32(mlp):
    model, inputs = mlp
    fast = accelc.accelerate(model, inputs, backend="onnxruntime", precision="auto", tolerance=1e-7)
    assert fast.report["precision"] == "fp32" and fast.report["backend"] == "onnxruntime"
    (int8,) = [c for c in fast.report["precision_candidates"] if c["precision"] == "int8"]
    # the int8 pass itself finds no layers to keep in fp32 that would do, and leaves the model float
    assert not int8["chosen"] and int8["reason"].startswith("not quantised: int8 error"), int8
    assert "above the budget 1e-07" in int8["reason"]
    x = torch.randn(2, *inputs[0].shape[1:])
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"tolerance": 0.1}, "--tolerance is the error --precision auto may accept"),
    ({"precision": "auto", "tolerance": 0}, "between 0 and 1"),
    ({"precision": "auto", "branches": 2}, "--precision auto chooses among the CPU's precisions"),
])
def test_bad_settings_are_refused_before_any_work(mlp, monkeypatch, options, message):
    monkeypatch.setattr(api, "run_eagerly", lambda *a, **k: pytest.fail("the model ran before the arguments were checked"))
    model, inputs = mlp
    with pytest.raises(UserInputError, match=message):
        accelc.accelerate(model, inputs, **options)


def test_a_candidate_wrong_only_at_a_large_set_is_not_kept(mlp, monkeypatch):
    """Lower precisions are checked on the quick sets before the timing and the fastest then on
    every other one: int8 made wrong at batch 8 (outside the quick sets) and timed fastest is not
    kept, and says why."""
    from accelc.runtime.onnxruntime import OrtRuntime
    from accelc.timing import Timing

    real = OrtRuntime.forward
    monkeypatch.setattr(OrtRuntime, "forward", lambda self, *args: real(self, *args) + (
        1.0 if self.precision == "int8" and args[0].shape[0] >= 8 else 0.0))
    monkeypatch.setattr("accelc.timing.compare_latency", lambda systems, sets, **options: {
        name: Timing(*(4 * [0.1 if "int8" in name else 1.0]), iterations=3) for name in systems})
    model, inputs = mlp
    # A loose tolerance, so that int8 passes its quick check on every CPU (7-bit weights without VNNI).
    fast = accelc.accelerate(model, inputs, precision="auto", tolerance=0.1)
    report = fast.report
    (int8,) = [c for c in report["precision_candidates"] if c["precision"] == "int8"]
    assert not int8["chosen"] and "disagrees with eager" in int8["reason"] and "(8, " in int8["reason"]
    assert report["precision"] != "int8"
    x = torch.randn(8, *inputs[0].shape[1:])
    with torch.inference_mode():
        ref = model(x)
    assert _relative_error(fast(x), ref) <= 0.1


def test_a_full_range_int8_artifact_runs_its_fp32_graph_on_a_cpu_without_vnni(mlp, tmp_path, monkeypatch):
    """8-bit int8 weights saturate in ONNX Runtime's kernel on an x86 CPU without VNNI: loading
    such a model.onnx there runs the artifact's fp32 graph instead, with a warning, never the
    wrong int8 answers."""
    import platform

    import accelc.cpu
    from accelc.errors import AccelcFallbackWarning

    model, inputs = mlp
    monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    fast = accelc.accelerate(model, inputs, backend="onnxruntime", precision="int8")
    assert fast.report["precision"] == "int8"
    fast.save(str(tmp_path / "int8"))
    monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.warns(AccelcFallbackWarning, match="no VNNI"):
        loaded = accelc.load(str(tmp_path / "int8"))
    x = torch.randn(5, *inputs[0].shape[1:])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)  # fp32, not int8
    monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset({"avx2", "avx_vnni"}))
    with torch.inference_mode():
        assert _relative_error(accelc.load(str(tmp_path / "int8"))(x), model(x)) > 1e-4  # int8 where it is right


def test_int8_above_the_tolerance_keeps_its_most_sensitive_layers_in_fp32(tmp_path):
    """Small BERT's int8 error comes mostly from its pooler (a linear straight into tanh and the
    output, 8e-3 of the output's scale): under a tolerance of 3e-3, the int8 candidate keeps that
    layer in fp32 instead of being dropped, is within the tolerance, and names the layer; once
    kept, the report lists it among what its build left alone, and the artifact runs the same."""
    torch.manual_seed(0)  # the weights the pooler's share of the error was measured on
    model, inputs = load_sample("bert")
    tolerance = 3e-3
    fast = accelc.accelerate(model, inputs, backend="onnxruntime", precision="auto", tolerance=tolerance)
    (int8,) = [c for c in fast.report["precision_candidates"] if c["precision"] == "int8"]
    assert int8["layers_kept_fp32"], int8
    assert int8["max_rel_error"] <= tolerance and "above the tolerance" not in int8["reason"], int8
    if int8["chosen"]:
        kept = {r["node"] for r in fast.report["refusals"] if r["reason"].startswith("kept in fp32")}
        assert kept == set(int8["layers_kept_fp32"])
    x = tuple(torch.randint(0, 10, (3, 11)) if i == 0 else torch.ones(3, 11, dtype=torch.long) if i == 1
              else torch.zeros(3, 11, dtype=torch.long) for i in range(len(inputs)))
    with torch.inference_mode():
        ref = model(*x)
    for got, want in zip(fast(*x), ref):
        assert float((got - want).abs().max() / want.abs().max()) <= 2 * tolerance
