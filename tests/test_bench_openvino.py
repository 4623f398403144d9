"""`accelc bench`'s OpenVINO peers (f32 and OpenVINO's own precision) and torch.compile on bf16."""

from __future__ import annotations

import importlib.util
import sys

import pytest

import torch

import accelc.cpu
from accelc.bench import DEFAULT_SYSTEMS, BenchContext, expand_systems, run_bench
from accelc.bench import systems as bench_systems
from accelc.bench.openvino import INSTALL_HINT
from test_bench import FAST, load_sample

SYSTEMS = ["eager", "openvino-f32", "openvino", "compile-bf16"]

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason=f"openvino is not installed ({INSTALL_HINT})")


def _check_peers(result) -> None:
    assert [s.name for s in result.systems] == SYSTEMS
    for name in SYSTEMS:
        entry = result.entry(name)
        assert entry.status == "ok", (name, entry.reason)
        assert entry.within_tolerance is True, (name, entry.max_abs_error)
        assert entry.build_s is not None and entry.build_s > 0
        assert entry.median_ms is not None and entry.median_ms > 0
    assert result.entry("openvino-f32").note == "inference precision fp32"
    assert result.entry("openvino-f32").max_rel_error < 1e-4  # f32 really is f32
    default = result.entry("openvino").note
    assert default.startswith("inference precision ") and default.split()[2] in ("fp32", "bf16", "fp16"), default
    assert "freezing=True" in result.entry("compile-bf16").note
    assert 0 < result.entry("compile-bf16").max_abs_error  # it did run in bf16
    assert result.versions["openvino"]


@needs_openvino
@pytest.mark.parametrize("sample", ["mlp", "cnn"])
def test_openvino_and_compile_bf16_are_peers(sample, monkeypatch):
    torch.manual_seed(0)
    model, inputs = load_sample(sample)
    if sample == "mlp":  # as on a CPU without bf16 instructions: still run, but say so
        monkeypatch.setattr(accelc.cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    result = run_bench(model, inputs, systems=SYSTEMS, model_name=sample, **FAST)
    _check_peers(result)
    note = result.entry("compile-bf16").note
    if sample == "mlp" or bench_systems._bf16_emulated(torch.device("cpu")):
        assert "bf16 is emulated on this CPU" in note and "not representative" in note
    else:
        assert "emulated" not in note


@needs_openvino
def test_openvino_serves_another_batch_size(tmp_path):
    """convert_model leaves the sizes dynamic: the system built on batch 1 answers batch 3 like eager."""
    torch.manual_seed(0)
    model, inputs = load_sample("mlp")
    model.eval()
    ctx = BenchContext(model, model, [inputs], [inputs], torch.device("cpu"), "fp32", str(tmp_path), torch.get_num_threads())
    other = (torch.randn((3,) + tuple(inputs[0].shape[1:])),)
    with torch.inference_mode():
        expected = model(*other)
    for name, builder in bench_systems._builders(["openvino-f32", "openvino"]).items():
        built = builder(ctx)
        with torch.inference_mode():
            (got,) = built.outputs(built.run(*other))
        assert got.shape == expected.shape
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= (1e-4 if name == "openvino-f32" else 4e-2) * max(1.0, scale)


class Unconvertible(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.qr(self.linear(x))[0]  # no OpenVINO conversion rule for aten::linalg_qr


@needs_openvino
def test_a_model_openvino_cannot_convert_is_a_one_line_failure():
    result = run_bench(Unconvertible(), (torch.randn(4, 4),), systems=["eager", "openvino-f32"], **FAST)
    assert result.entry("eager").status == "ok"
    entry = result.entry("openvino-f32")
    assert entry.status == "failed"
    assert "\n" not in entry.reason and "src/" not in entry.reason
    assert "no conversion rule for aten::linalg_qr" in entry.reason, entry.reason


def test_without_openvino_the_rows_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    assert {"openvino-f32", "openvino", "compile-bf16"} <= set(expand_systems(DEFAULT_SYSTEMS))
    model, inputs = load_sample("mlp")
    result = run_bench(model, inputs, systems=["eager", "openvino"], **FAST)
    assert result.entry("eager").status == "ok"
    for name in ("openvino-f32", "openvino"):
        entry = result.entry(name)
        assert entry.status == "unavailable" and entry.reason == INSTALL_HINT, (name, entry.reason)
        assert entry.median_ms is None
    assert result.versions["openvino"] is None


def test_system_names():
    assert expand_systems("openvino") == ["eager", "openvino-f32", "openvino"]
    assert expand_systems("openvino-f32,compile-bf16") == ["eager", "openvino-f32", "compile-bf16"]
    names = expand_systems(DEFAULT_SYSTEMS)
    assert names.index("compile") < names.index("compile-bf16") < names.index("openvino-f32") < names.index("accelc-torch")
