"""`accelc bench` and the suite's renderer: every system gets a row with sane numbers or a reason."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import torch

from accelc import bench
from accelc.bench import BenchResult, ProgressBar, expand_systems, format_table, run_bench
from accelc.bench import systems as bench_systems
from accelc.errors import UserInputError
from accelc.timing import compare_latency

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
FAST = dict(seconds=0.2, warmup=1, min_iterations=2, max_iterations=20)


def load_sample(name: str):
    if str(SAMPLES) not in sys.path:
        sys.path.insert(0, str(SAMPLES))
    spec = importlib.util.spec_from_file_location(f"bench_test_{name}", SAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_model(small=True), tuple(module.get_inputs(small=True))


def load_render():
    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_ok_entry(entry, batch: int) -> None:
    assert entry.status == "ok", (entry.name, entry.reason)
    assert 0 < entry.min_ms <= entry.median_ms <= entry.p90_ms <= entry.max_ms
    assert entry.iterations >= FAST["min_iterations"]
    assert entry.throughput_per_s == pytest.approx(batch / (entry.median_ms / 1e3), rel=1e-2)
    assert entry.build_s is not None and entry.build_s >= 0
    assert entry.max_abs_error is not None and entry.max_abs_error < 1e-3
    assert entry.within_tolerance is True
    assert {"build_peak_mb", "retained_mb", "run_peak_mb"} <= set(entry.memory)


@pytest.fixture(scope="module")
def mlp_result():
    torch.manual_seed(0)
    model, inputs = load_sample("mlp")
    return run_bench(model, inputs, model_name="mlp", **FAST)


def test_every_system_has_a_row(mlp_result):
    names = [s.name for s in mlp_result.systems]
    assert names == ["eager", "compile", "compile-bf16", "onnxruntime", "ort-transformers-dynamo",
                     "ort-transformers-torchscript", "openvino-f32", "openvino", "accelc-torch", "accelc-onnxruntime",
                     "accelc-openvino"]
    for name in ("eager", "compile", "onnxruntime", "accelc-torch"):
        _check_ok_entry(mlp_result.entry(name), batch=1)
    assert mlp_result.entry("eager").max_abs_error == 0
    # The MLP is not a transformers model: the ORT transformers optimizer does not apply.
    for name in ("ort-transformers-dynamo", "ort-transformers-torchscript"):
        entry = mlp_result.entry(name)
        assert entry.status == "skipped" and "not a transformers model" in entry.reason
        assert entry.median_ms is None
    # Written by another issue: either it runs or it says why not, never a crash.
    onnx_backend = mlp_result.entry("accelc-onnxruntime")
    assert onnx_backend.status == "ok" or onnx_backend.reason


def test_result_serialises_and_prints(mlp_result):
    data = json.loads(mlp_result.to_json())
    assert data["batch_size"] == 1 and data["precision"] == "fp32" and data["threads"] == torch.get_num_threads()
    again = BenchResult.from_dict(data)
    assert [s.name for s in again.systems] == [s.name for s in mlp_result.systems]
    assert again.speedup("onnxruntime") == pytest.approx(mlp_result.speedup("onnxruntime"))
    table = format_table(mlp_result)
    for s in mlp_result.systems:
        assert s.name in table
    assert "not a transformers model" in table


def test_result_json_is_strict_and_loads_files_with_unknown_fields(mlp_result):
    import copy

    odd = copy.deepcopy(mlp_result)
    odd.systems[0].median_ms = float("nan")
    odd.systems[0].max_abs_error = float("inf")
    data = json.loads(odd.to_json())  # strict JSON: no NaN/Infinity tokens
    assert data["systems"][0]["median_ms"] is None and data["systems"][0]["max_abs_error"] is None
    data["systems"][0]["added_by_a_newer_version"] = 1
    data["also_new"] = {}
    again = BenchResult.from_dict(data)
    assert [s.name for s in again.systems] == [s.name for s in mlp_result.systems]


def test_failing_system_is_reported_not_raised(monkeypatch):
    def broken(ctx, *args, **kwargs):
        raise RuntimeError("exporter exploded\nsecond line")

    # run_bench looks its builders up in accelc.bench.systems, so that is the module to patch.
    monkeypatch.setattr(bench_systems, "_build_ort", broken)
    model, inputs = load_sample("cnn")
    inputs = (torch.cat([inputs[0], inputs[0] * 0.5]),)  # batch 2
    result = run_bench(model, inputs, systems=["eager", "onnxruntime", "accelc-torch"], **FAST)
    entry = result.entry("onnxruntime")
    assert entry.status == "failed"
    assert entry.reason == "RuntimeError: exporter exploded"
    _check_ok_entry(result.entry("eager"), batch=2)
    _check_ok_entry(result.entry("accelc-torch"), batch=2)
    assert result.batch_size == 2


def test_cuda_only_rows_are_skipped_on_cpu_and_accelc_failures_are_failures(monkeypatch):
    """A TensorRT row on CPU would time plain ORT under TensorRT's name; an accelc backend that
    breaks is a failure to report, not a missing dependency."""
    from accelc import api

    def broken(*args, **kwargs):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(api, "accelerate", broken)
    model, inputs = load_sample("mlp")
    result = run_bench(model, inputs, systems=["eager", "onnxruntime-tensorrt", "accelc-onnxruntime"], **FAST)
    assert result.entry("onnxruntime-tensorrt").status == "skipped"
    assert "CUDA" in result.entry("onnxruntime-tensorrt").reason
    assert result.entry("accelc-onnxruntime").status == "failed"
    assert "backend exploded" in result.entry("accelc-onnxruntime").reason


def test_wrong_outputs_are_flagged(monkeypatch):
    def off_by_one(ctx):
        return bench.Built(lambda *x: ctx.eager_model(*x) + 1.0, ctx.inputs)

    monkeypatch.setattr(bench_systems, "_build_eager", off_by_one)
    model, inputs = load_sample("mlp")
    # eager itself is the reference's model, so the wrong "eager" row must show its error.
    result = run_bench(model, inputs, systems=["eager"], **FAST)
    entry = result.entry("eager")
    assert entry.within_tolerance is False and entry.max_abs_error == pytest.approx(1.0, rel=1e-4)


def test_system_names():
    assert expand_systems(["compile", "accelc"], max_autotune=True)[:3] == ["eager", "compile", "compile-max-autotune"]
    assert expand_systems("eager,onnxruntime") == ["eager", "onnxruntime"]
    with pytest.raises(UserInputError, match="unknown system 'tvm'"):
        expand_systems(["tvm"])


def test_bench_main_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = argparse.Namespace(model=str(SAMPLES / "mlp.py"), against="eager", json=str(out), device="cpu",
                              precision="fp32", max_autotune=False, seconds=0.2)
    assert bench.bench_main(args) == 0
    data = json.loads(out.read_text())
    assert [s["name"] for s in data["systems"]] == ["eager", "accelc-torch", "accelc-onnxruntime", "accelc-openvino"]
    assert "median ms" in capsys.readouterr().out


def test_progress_bar_without_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream)
    bar("building compile", 0.2)
    bar("timing round 1", 0.8)
    bar("timing round 2", 0.9)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "20% building compile" in lines[0] and "80% timing round 1" in lines[1]
    assert "\033" not in stream.getvalue()  # no escape codes in a log


def test_progress_bar_on_a_terminal_is_drawn_by_rich_and_cleared():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = ProgressBar(stream=stream, prefix="[1/2] mlp ")
    bar("building compile", 0.5)
    bar.close()
    assert "building compile" in stream.getvalue() and bar._bar is None


def test_compare_latency_keeps_its_signature():
    timings = compare_latency({"a": lambda x: x + 1, "b": lambda x: x * 2}, [(torch.ones(4),)], seconds=0.01, min_iterations=3)
    assert set(timings) == {"a", "b"} and all(t.iterations >= 3 for t in timings.values())


def test_settle_pause_is_not_timed():
    from accelc.timing import measure_interleaved

    timings = measure_interleaved({"a": lambda x: x + 1}, [(torch.ones(4),)], seconds=0.0, min_iterations=3,
                                  turn_seconds=0.001, settle_seconds=0.02)
    assert timings["a"].max_ms < 20  # the 20 ms pause before each turn is outside every sample


def test_other_load_notes_only_other_processes():
    from accelc.bench import OtherLoad

    probe = OtherLoad()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # this process busy: not a reason to warn
        sum(range(1000))
    note = probe.note()
    assert note == "" or "other processes used" in note


def test_compile_freezing_is_a_system():
    assert expand_systems("compile-freezing") == ["eager", "compile-freezing"]


def _fake_entry(name, median=None, status="ok", reason=""):
    return {"name": name, "status": status, "reason": reason, "median_ms": median, "p90_ms": median, "min_ms": median,
            "max_ms": median, "iterations": 5, "throughput_per_s": None, "build_s": 1.0, "memory": {},
            "max_abs_error": 0.0, "max_rel_error": 0.0, "within_tolerance": True, "note": ""}


def _fake_run(sample, batch, systems):
    return {"sample": sample, "batch": batch, "precision": "fp32", "small": False, "result": {
        "model": sample, "device": "cpu", "precision": "fp32", "batch_size": batch, "threads": 2, "seconds": 3.0,
        "input_shapes": [["float32", [batch, 8]]], "versions": {}, "machine": {}, "systems": systems}}


def test_benchmarks_md_from_fake_results(tmp_path):
    render = load_render()
    suite = {"suite": {"device": "cpu", "device_tag": "cpu", "date": "2030-01-02", "threads": 2,
                       "machine": {"cpu": "Test CPU", "cores": 2}, "versions": {"torch": "9.9"}, "notes": ["timing: 3 s"]},
             "runs": [
                 _fake_run("mlp", 1, [_fake_entry("eager", 10.0), _fake_entry("compile", 5.0), _fake_entry("onnxruntime", 4.0),
                                      _fake_entry("ort-transformers-dynamo", status="skipped", reason="not a transformers model"),
                                      _fake_entry("accelc-torch", 2.0)]),
                 _fake_run("mlp", 8, [_fake_entry("eager", 80.0), _fake_entry("compile", status="failed", reason="RuntimeError: boom"),
                                      _fake_entry("onnxruntime", 40.0), _fake_entry("accelc-torch", 50.0)]),
             ]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu-2030-01-02.json").write_text(json.dumps(suite))
    (results / "cpu-2029-12-31.json").write_text("{}")  # older: ignored
    (results / "cpu-2030-01-03-quick.json").write_text("{}")  # smoke runs: ignored
    md_path = tmp_path / "BENCHMARKS.md"
    render.write_all(str(results), str(md_path))
    md = md_path.read_text()
    assert "## cpu: Test CPU" in md and "### mlp" in md
    assert "| **accelc-torch** | 2.000 | 5.00x | 2.00x | 50.000 | 1.60x | 0.80x |" in md
    assert "| onnxruntime | 4.000 | 2.50x | 1.00x (best peer) | 40.000 | 2.00x | 1.00x (best peer) |" in md
    assert "compile b8: failed: RuntimeError: boom" in md
    assert "ort-transformers-dynamo b1: skipped: not a transformers model" in md
    gm = math.sqrt(2.0 * 0.8)
    assert f"over 2 configurations: {gm:.2f}x" in md
    assert "![speedup over eager per model and system](results/cpu-2030-01-02.svg)" in md
    svg = ET.parse(results / "cpu-2030-01-02.svg").getroot()
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}rect")) > 5


def test_a_clear_winner_is_called_only_when_every_other_system_is_clearly_slower():
    from accelc.timing import clear_winner

    assert clear_winner({"a": [1.0, 1.1, 1.0, 1.05], "b": [2.0, 2.1, 1.9, 2.2]}) == "a"
    assert clear_winner({"a": [1.0, 1.1, 1.0, 1.05], "b": [2.0, 2.1, 1.9, 2.2], "c": [1.1, 1.2, 1.15, 1.1]}) is None
    assert clear_winner({"a": [1.0, 3.0, 1.0, 3.0], "b": [2.0, 2.1, 1.9, 2.2]}) is None  # overlapping spreads
    assert clear_winner({"a": [1.0], "b": [2.0]}) is None  # too few calls to say


def test_timing_stops_early_only_for_a_clear_winner():
    import time as clock

    from accelc.timing import compare_latency

    def sleeper(seconds):
        return lambda *args: clock.sleep(seconds)

    inputs = [(torch.zeros(1),)]
    start = clock.perf_counter()
    clear = compare_latency({"fast": sleeper(0.001), "slow": sleeper(0.004)}, inputs, seconds=3.0, warmup=1,
                            min_iterations=3, stop_when_clear=True)
    assert clock.perf_counter() - start < 1.5 and clear["fast"].median_ms < clear["slow"].median_ms
    start = clock.perf_counter()
    compare_latency({"a": sleeper(0.002), "b": sleeper(0.002)}, inputs, seconds=1.0, warmup=1, min_iterations=3,
                    stop_when_clear=True)
    assert clock.perf_counter() - start >= 1.0  # a tie runs its full time
