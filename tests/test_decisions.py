"""``backend="auto"`` remembers which runtime it kept, per graph and machine: a rebuild builds that
runtime alone and checks it on every input set. A remembered runtime that no longer builds or
matches eager is forgotten, and the others are built and timed as on a first build."""

from __future__ import annotations

import json

import pytest
import torch

import accelc
from accelc import backends, decisions
from accelc.capture import capture
from test_bench import load_sample
from test_runtime_checks import _every_set


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ACCELC_CACHE_DIR", str(folder))
    return folder / decisions.FILE_NAME


@pytest.fixture(scope="module")
def mlp():
    return load_sample("mlp")


def _builds(monkeypatch) -> list[str]:
    """The runtimes built beside PyTorch's, in order."""
    built = []
    for name, function in (("onnxruntime", "_onnxruntime"), ("openvino", "_openvino")):
        real = getattr(backends, function)
        monkeypatch.setattr(backends, function, lambda *a, _real=real, _name=name, **k: built.append(_name) or _real(*a, **k))
    return built


def _remembered(cache) -> dict:
    entries = json.loads(cache.read_text())
    assert len(entries) == 1
    return next(iter(entries.values()))


def _set_remembered(cache, chosen: str) -> None:
    entries = json.loads(cache.read_text())
    for entry in entries.values():
        entry["chosen"] = chosen
    cache.write_text(json.dumps(entries))


def _section(report: dict) -> dict:
    return {"torch": report, "onnxruntime": report.get("onnx"), "openvino": report.get("openvino")}[report["backend"]]


def test_a_rebuild_builds_the_remembered_runtime_alone_and_checks_it_on_every_set(mlp, cache, monkeypatch):
    model, inputs = mlp
    builds = _builds(monkeypatch)
    first = accelc.accelerate(model, inputs, backend="auto", measure=False)
    candidates = [name for name in ("onnxruntime", "openvino") if name in builds]
    assert candidates and "auto_remembered" not in first.report
    assert _remembered(cache)["chosen"] == first.report["backend"]
    # Remember the one that did not win, so that the second build cannot agree with a new timing by chance.
    other = next(name for name in ["torch", *candidates] if name != first.report["backend"])
    _set_remembered(cache, other)
    builds.clear()

    again = accelc.accelerate(model, inputs, backend="auto", measure=False)
    report = again.report
    assert report["backend"] == other and report["auto_remembered"] == backends.REMEMBERED
    assert builds == ([] if other == "torch" else [other])
    phases = report["build_seconds"]
    assert "auto timing" not in phases and ("onnx export" in phases) == (other != "torch")
    # Another runtime remembered: the PyTorch runtime's lowering stage does not run at all.
    assert ("lowering stage" in phases) == ("runtime_lowering" in report) == (other == "torch")
    assert report["backend_choice"]["chosen"] == other
    checked = _section(report)["verification"]
    assert checked["ok"] and checked["inputs_checked"] == _every_set(report)
    x = torch.randn(5, *inputs[0].shape[1:])
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_remembered_runtime_that_fails_is_forgotten_and_the_rest_are_timed(mlp, cache, monkeypatch):
    model, inputs = mlp
    accelc.accelerate(model, inputs, backend="auto", measure=False)
    _set_remembered(cache, "onnxruntime")
    builds = _builds(monkeypatch)
    monkeypatch.setattr(backends, "_onnxruntime", lambda *a, **k: builds.append("onnxruntime") or None)

    fast = accelc.accelerate(model, inputs, backend="auto", measure=False)
    report = fast.report
    assert "auto_remembered" not in report and report["backend"] != "onnxruntime"
    assert builds.count("onnxruntime") == 1  # tried once, as remembered; not again with the rest
    assert "auto timing" in report["build_seconds"] and "onnxruntime" not in report["backend_choice"]
    assert "torch" in report["backend_choice"] and report["runtime_lowering"]  # built once the remembered failed
    assert _remembered(cache)["chosen"] == report["backend"]


def test_a_remembered_runtime_wrong_at_a_large_set_gives_way(mlp, cache, monkeypatch):
    """Right on the quick sets, wrong at the far probe: it is not used, not remembered, and the
    build goes on to time the others."""
    model, inputs = mlp
    accelc.accelerate(model, inputs, backend="auto", measure=False)
    _set_remembered(cache, "onnxruntime")
    from accelc.runtime.onnxruntime import OrtRuntime

    real = OrtRuntime.forward
    monkeypatch.setattr(OrtRuntime, "forward", lambda self, *args: real(self, *args) + (1.0 if args[0].shape[0] >= 8 else 0.0))
    fast = accelc.accelerate(model, inputs, backend="auto", measure=False)
    report = fast.report
    assert report["backend"] != "onnxruntime" and "auto_remembered" not in report
    assert "ONNX Runtime disagrees with eager (at input shapes" in report["auto_left_out"]["onnxruntime"]
    assert _remembered(cache)["chosen"] == report["backend"]
    x = torch.randn(8, *inputs[0].shape[1:])
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_what_decides_the_fastest_is_in_the_key_and_the_weights_values_are_not(monkeypatch):
    def key(model, x, threads=2, precision="fp32"):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        gm = capture(model, (x,)).graph_module
        return decisions.choice_key(gm, (x,), torch.device("cpu"), precision, ["onnxruntime", "openvino"], {}, None)

    torch.manual_seed(0)
    small, retrained = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    base = key(small, x)
    assert key(retrained, x) == base  # other weights, same work
    assert key(torch.nn.Linear(8, 5), x) != base
    assert key(small, torch.randn(3, 8)) != base
    assert key(small, x, threads=4) != base
    assert key(small, x, precision="bf16") != base


def test_an_unwritable_cache_is_ignored(mlp, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ACCELC_CACHE_DIR", str(blocker / "cache"))  # under a file: never a folder
    model, inputs = mlp
    for _ in range(2):
        fast = accelc.accelerate(model, inputs, backend="auto", measure=False)
        assert "auto_remembered" not in fast.report and "auto timing" in fast.report["build_seconds"]


def test_the_dry_run_and_the_summary_say_what_was_remembered(mlp, cache):
    model, inputs = mlp
    accelc.accelerate(model, inputs, backend="auto", measure=False)
    chosen = _remembered(cache)["chosen"]
    dry = accelc.explain(model, inputs, backend="auto")["dry_run"]["auto"]
    assert dry.startswith(f"auto would build {backends.RUNTIME_WORDS[chosen]} alone")

    from accelc.cli import summary_rows

    fast = accelc.accelerate(model, inputs, backend="auto", measure=False)
    labels = [label for label, _ in summary_rows(fast.report)]
    assert "auto remembered" in labels and "auto timed" not in labels
