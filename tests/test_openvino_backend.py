"""The OpenVINO backend: built from the graph stage's output, verified like every backend, dynamic,
thread-safe, saved as an IR that plain OpenVINO loads, a candidate of ``auto``, refused where it
cannot run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import accelc
from accelc import api
from accelc.errors import InputMismatchError, UserInputError
from test_bench import load_sample

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install openvino)")


@pytest.fixture(scope="module")
def mlp():
    return load_sample("mlp")


@pytest.fixture(scope="module")
def cnn():
    return load_sample("cnn")


@pytest.fixture(scope="module")
def mlp_openvino(mlp):
    model, inputs = mlp
    return accelc.accelerate(model, inputs, backend="openvino")


def _eager(model, *args):
    with torch.inference_mode():
        return model(*args)


@needs_openvino
def test_runs_at_fp32_with_every_setting_explicit(mlp, mlp_openvino):
    model, inputs = mlp
    report = mlp_openvino.report
    assert report["backend"] == "openvino" and not report.get("backend_fallback")
    settings = report["openvino"]["settings"]
    assert settings["precision_hint"] == "f32" and settings["inference_precision"] == "fp32"
    assert settings["threads"] == torch.get_num_threads() and settings["streams"] == 1
    assert report["openvino"]["verification"]["ok"]
    for batch in (1, 3, 8):  # the batch is dynamic in the IR too
        x = torch.randn(batch, *inputs[0].shape[1:])
        torch.testing.assert_close(mlp_openvino(x), _eager(model, x), rtol=1e-4, atol=1e-5)


@needs_openvino
def test_dynamic_image_sizes_and_batch(cnn):
    model, inputs = cnn
    fast = accelc.accelerate(model, inputs, backend="openvino")
    assert fast.report["backend"] == "openvino"
    assert set(fast.report["dynamic"]["dynamic"]) >= {"batch", "height", "width"}
    for shape in ((1, 3, 64, 64), (3, 3, 48, 80), (8, 3, 96, 96)):
        x = torch.randn(shape)
        torch.testing.assert_close(fast(x), _eager(model, x), rtol=1e-3, atol=1e-4)


@needs_openvino
def test_bf16_is_openvinos_lowering_of_the_fp32_graph(mlp, tmp_path):
    from accelc.runtime.openvino import cpu_runs_bf16

    model, inputs = mlp
    fast = accelc.accelerate(model, inputs, backend="openvino", precision="bf16")
    section = fast.report["openvino"]
    assert fast.report["backend"] == "openvino" and section["verification"]["ok"]
    assert section["settings"]["precision_hint"] == "bf16"
    assert section["settings"]["inference_precision"] == ("bf16" if cpu_runs_bf16() else "fp32")
    assert ("note" in section) == (not cpu_runs_bf16())
    # OpenVINO got the graph from before lower_precision: no bf16 in the IR, its weights fp32.
    fast.save(str(tmp_path / "out"))
    xml = (tmp_path / "out" / "model.xml").read_text()
    assert "bf16" not in xml and 'element_type="f32"' in xml
    x = torch.randn(4, *inputs[0].shape[1:])
    expected = _eager(model, x)
    torch.testing.assert_close(fast(x), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


@needs_openvino
def test_artifact_loads_in_plain_openvino_and_in_accelc(mlp, mlp_openvino, tmp_path):
    model, inputs = mlp
    folder = tmp_path / "artifact"
    mlp_openvino.save(str(folder))
    assert {"model.xml", "model.bin", "openvino_runtime.json", "model.pt2"} <= {p.name for p in folder.iterdir()}
    x = torch.randn(5, *inputs[0].shape[1:])
    torch.save((x, _eager(model, x)), tmp_path / "check.pt")
    # The README's snippet, in a process that never imports accelc.
    script = textwrap.dedent(f"""
        import json, sys
        import openvino as ov, torch
        x, expected = torch.load({str(tmp_path / "check.pt")!r})
        settings = json.load(open({str(folder / "openvino_runtime.json")!r}))["settings"]
        compiled = ov.Core().compile_model({str(folder / "model.xml")!r}, "CPU", {{
            "INFERENCE_PRECISION_HINT": settings["precision_hint"], "INFERENCE_NUM_THREADS": settings["threads"],
            "NUM_STREAMS": 1}})
        out = torch.from_numpy(compiled([x.numpy()])[0])
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        assert not any(m == "accelc" or m.startswith("accelc.") for m in sys.modules)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]

    loaded = accelc.load(str(folder))
    assert type(loaded.runner).__name__ == "OpenVinoRuntime"
    torch.testing.assert_close(loaded(x), _eager(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputMismatchError, match="expected float32"):
        loaded(x.double())  # the loaded artifact guards its calls as the built module does


@needs_openvino
def test_a_build_writes_no_ir_until_saved_and_saves_after_close(mlp, tmp_path):
    """A build compiles the model OpenVINO read from the export's ONNX files (weights mapped from
    them): no model.xml/.bin is written unless the artifact is saved, and saving still works once
    the runtime closed its folder (the mapped weights outlive the files' names)."""
    import openvino as ov

    model, inputs = mlp
    fast = accelc.accelerate(model, inputs, backend="openvino")
    runtime = fast.runner
    folder = runtime._owned.peek()[2][0]
    assert not {"model.xml", "model.bin"} & set(os.listdir(folder))
    runtime.close()
    assert not os.path.exists(folder)
    fast.save(str(tmp_path / "out"))
    x = torch.randn(3, *inputs[0].shape[1:])
    compiled = ov.Core().compile_model(str(tmp_path / "out" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    torch.testing.assert_close(torch.from_numpy(compiled([x.numpy()])[0]), _eager(model, x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast(x), _eager(model, x), rtol=1e-4, atol=1e-5)


@needs_openvino
def test_calls_from_several_threads(mlp, mlp_openvino):
    model, inputs = mlp
    batches = [torch.randn(b, *inputs[0].shape[1:]) for b in (1, 2, 5, 8) for _ in range(3)]
    expected = [_eager(model, x) for x in batches]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = mlp_openvino(batches[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, want in enumerate(expected):
        torch.testing.assert_close(results[i], want, rtol=1e-4, atol=1e-5)


@needs_openvino
def test_auto_times_openvino_beside_the_others(mlp):
    model, inputs = mlp
    fast = accelc.accelerate(model, inputs)
    choice = fast.report["backend_choice"]
    assert {"torch", "onnxruntime", "openvino"} <= set(choice) and fast.report["backend"] == choice["chosen"]
    assert fast.report["openvino"]["verification"]["ok"]
    # One export served both ONNX Runtime and OpenVINO.
    assert fast.report["openvino"]["export"] == fast.report["onnx"]["export"]


@needs_openvino
def test_auto_builds_openvino_on_a_thread_beside_onnx_runtime_and_hears_its_failure(mlp, monkeypatch):
    """OpenVINO's conversion and compilation run on a thread of their own while ONNX Runtime's
    build runs; what fails there reaches the report as it did on the caller's thread."""
    from accelc.runtime import openvino as runtime_module

    compiled_on = []
    real = runtime_module.OpenVinoRuntime.__init__
    monkeypatch.setattr(runtime_module.OpenVinoRuntime, "__init__",
                        lambda self, *a, **k: compiled_on.append(threading.current_thread().name) or real(self, *a, **k))
    model, inputs = mlp
    fast = accelc.accelerate(model, inputs)
    assert compiled_on == ["accelc-openvino-build"] and "openvino" in fast.report["backend_choice"]

    def broken(self, *args, **kwargs):
        raise RuntimeError("the CPU plugin ran out of memory")

    monkeypatch.setattr(runtime_module.OpenVinoRuntime, "__init__", broken)
    fast = accelc.accelerate(model, inputs)
    why = fast.report["auto_left_out"]["openvino"]
    assert why.startswith("OpenVINO unavailable") and why.endswith("compile_model: the CPU plugin ran out of memory)")
    assert fast.report["backend"] in ("torch", "onnxruntime")


def test_auto_without_openvino_says_how_to_get_it(mlp, monkeypatch):
    from accelc.onnx import to_openvino

    monkeypatch.setattr(to_openvino, "openvino_available", lambda: "openvino is not installed (pip install openvino)")
    model, inputs = mlp
    fast = accelc.accelerate(model, inputs, backend="auto")
    assert "openvino" not in fast.report["backend_choice"]
    assert "pip install openvino" in fast.report["auto_left_out"]["openvino"]
    assert not fast.report.get("backend_fallback")
    with pytest.raises(UserInputError, match="--backend openvino: openvino is not installed"):
        accelc.accelerate(model, inputs, backend="openvino")


@needs_openvino
def test_an_openvino_that_disagrees_is_not_used(mlp, monkeypatch):
    from accelc.runtime.openvino import OpenVinoRuntime

    real = OpenVinoRuntime.forward
    monkeypatch.setattr(OpenVinoRuntime, "forward", lambda self, *args: real(self, *args) + 1.0)
    model, inputs = mlp
    asked = accelc.accelerate(model, inputs, backend="openvino")
    assert asked.report["backend"] == "torch"
    assert asked.report["backend_fallback"].startswith("OpenVINO disagrees with eager")
    auto = accelc.accelerate(model, inputs, backend="auto")
    assert auto.report["backend"] != "openvino" and "openvino" not in auto.report["backend_choice"]
    assert auto.report["auto_left_out"]["openvino"].startswith("OpenVINO disagrees with eager")
    x = torch.randn(3, *inputs[0].shape[1:])
    torch.testing.assert_close(asked(x), _eager(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"device": "cuda"}, "runs one graph on the CPU"),
    ({"precision": "int8"}, "runs one graph on the CPU at fp32 or bf16"),
    ({"stages": 2}, "without --stages"),
])
def test_settings_it_cannot_run_are_refused_before_any_work(mlp, monkeypatch, options, message):
    monkeypatch.setattr(api, "run_eagerly", lambda *a, **k: pytest.fail("the model ran before the arguments were checked"))
    if options.get("device") == "cuda" and not torch.cuda.is_available():
        monkeypatch.setattr(api, "resolve_device", lambda device: torch.device("cuda"))
    model, inputs = mlp
    with pytest.raises(UserInputError, match=message):
        accelc.accelerate(model, inputs, backend="openvino", **options)


@needs_openvino
def test_report_and_summary_say_openvino_runs(mlp_openvino):
    from accelc.cli import summary_rows
    from accelc.report import render_html

    page = render_html(mlp_openvino.report)
    assert "openvino: OpenVINO&#x27;s CPU plugin runs the graph stage&#x27;s output at fp32" in page
    assert "<h2>OpenVINO</h2>" in page and "OpenVINO vs eager (the runtime that runs)" in page
    rows = dict(summary_rows(mlp_openvino.report))
    assert rows["backend"] == "openvino" and rows["max error"].startswith(
        f"{mlp_openvino.report['openvino']['verification']['max_abs_error']:.3g} abs (ok")


def _timings_favouring(fastest: str):
    """A stand-in for accelc.timing.compare_latency that ranks ``fastest`` first."""
    from accelc.timing import Timing

    def compare(systems, input_sets, **options):
        return {name: Timing(*(4 * [0.1 if fastest in name else 1.0]), iterations=3) for name in systems}
    return compare


@needs_openvino
def test_auto_checks_the_runtime_it_keeps_on_every_set(mlp, monkeypatch):
    """Candidates of auto are checked before the timing (OpenVINO, which has no passes to check, on
    the example alone), and only the one kept on the other sets: a runtime right there but wrong
    at batch 8 that wins the timing is left out, and the next in rank is kept, checked on every set."""
    from accelc.runtime.openvino import OpenVinoRuntime

    real = OpenVinoRuntime.forward
    monkeypatch.setattr(OpenVinoRuntime, "forward",
                        lambda self, *args: real(self, *args) + (1.0 if args[0].shape[0] >= 8 else 0.0))
    monkeypatch.setattr("accelc.timing.compare_latency", _timings_favouring("openvino"))
    model, inputs = mlp
    auto = accelc.accelerate(model, inputs, backend="auto")
    report = auto.report
    assert report["backend"] != "openvino" and report["backend_choice"]["chosen"] == report["backend"]
    assert report["auto_left_out"]["openvino"].startswith("OpenVINO disagrees with eager")
    assert "(8, " in report["auto_left_out"]["openvino"]  # the shape it was wrong at
    every_set = 3 + len(report["dynamic"]["verified_at"])  # the example, 3 variants, a probe per other size
    kept = report["onnx"] if report["backend"] == "onnxruntime" else report  # torch: the graph's check, completed
    assert kept["verification"]["ok"] and kept["verification"]["inputs_checked"] == every_set
    phases = report["build_seconds"]
    assert {"capture", "eager references", "graph stage", "final check", "onnx export", "onnxruntime build",
            "openvino build", "runtime checks", "auto timing"} <= set(phases)
    assert sum(v for k, v in phases.items() if k != "total") <= phases["total"]
    x = torch.randn(8, *inputs[0].shape[1:])
    torch.testing.assert_close(auto(x), _eager(model, x), rtol=1e-4, atol=1e-5)
    asked = accelc.accelerate(model, inputs, backend="openvino")
    assert asked.report["backend"] == "torch"
    assert asked.report["backend_fallback"].startswith("OpenVINO disagrees with eager")



@needs_openvino
@pytest.mark.parametrize("fastest", ["openvino", "onnxruntime"])
def test_auto_runs_openvino_past_the_example_only_when_it_ranks_first(mlp, monkeypatch, fastest):
    """Under auto, OpenVINO is checked on the example before the timing and on every other set only
    once it ranks first: wrong on the random variants (the example's own shape) and timed fastest,
    it is left out, naming the shape; timed slower, it runs no set but the example and the timing's."""
    from accelc.runtime.openvino import OpenVinoRuntime

    model, inputs = mlp
    real, seen = OpenVinoRuntime.forward, []

    def wrong_but_on_the_example(self, *args):
        seen.append(args[0])
        out = real(self, *args)
        return out if torch.equal(args[0], inputs[0]) else out + 1.0

    monkeypatch.setattr(OpenVinoRuntime, "forward", wrong_but_on_the_example)
    monkeypatch.setattr("accelc.timing.compare_latency", _timings_favouring(fastest))
    report = accelc.accelerate(model, inputs, backend="auto").report
    assert report["backend"] != "openvino"
    checked = report["openvino"]["verification"]
    if fastest == "openvino":
        assert report["auto_left_out"]["openvino"].startswith("OpenVINO disagrees with eager")
        assert not checked["ok"] and checked["inputs_checked"] == 3 + len(report["dynamic"]["verified_at"])
    else:
        assert "openvino" not in report.get("auto_left_out", {})
        assert checked["ok"] and checked["inputs_checked"] == 1
        assert all(torch.equal(x, inputs[0]) for x in seen)  # the stand-in timing makes no call
    kept = report["onnx"] if report["backend"] == "onnxruntime" else report
    assert kept["verification"]["ok"] and kept["verification"]["inputs_checked"] == 3 + len(report["dynamic"]["verified_at"])
