"""The large verification sets (each dynamic range's far probes) are run once, on the runtime that
will serve: not on the optimised graph and then again on the runtime. What serves is checked on
every set before it may; when it fails there, the next runtime in rank serves, and when the
PyTorch runtime fails too, the model runs eagerly and the report says where."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import accelc
from accelc import verify
from accelc.runtime.torch import TorchRuntime
from test_bench import load_sample


@pytest.fixture(scope="module")
def mlp():
    return load_sample("mlp")


def _eager(model, *args):
    with torch.inference_mode():
        return model(*args)


def _batches_run(monkeypatch) -> list[tuple[str, int]]:
    """(kind of module, batch) of every run of a check: the eager model's (its class name), the
    graph's ("graph") and the runtimes' (theirs)."""
    runs = []
    real = verify.run_detached

    def spy(module, inputs):
        kind = "graph" if isinstance(module, torch.fx.GraphModule) else type(module).__name__
        runs.append((kind, inputs[0].shape[0]))
        return real(module, inputs)

    monkeypatch.setattr(verify, "run_detached", spy)
    return runs


def _every_set(report: dict) -> int:
    """The example, its three random variants, and one probe at each other verified size."""
    return 3 + len(report["dynamic"]["verified_at"])


def _largest_batch(report: dict) -> int:
    return max(point["batch"] for point in report["dynamic"]["verified_at"])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_large_sets_run_once_on_the_runtime_that_serves(mlp, monkeypatch, backend):
    model, inputs = mlp
    runs = _batches_run(monkeypatch)
    fast = accelc.accelerate(model, inputs, backend=backend)
    report = fast.report
    assert report["backend"] == backend and report["fallback"] is None
    largest = _largest_batch(report)
    assert largest >= 4 * inputs[0].shape[0]  # a far probe the per-pass sets leave out
    at_largest = [kind for kind, batch in runs if batch == largest and kind != type(model).__name__]
    serving = "TorchRuntime" if backend == "torch" else "OrtRuntime"
    assert at_largest == [serving], runs  # once, on what serves; the graph never runs there
    checked = report["verification"] if backend == "torch" else report["onnx"]["verification"]
    assert checked["ok"] and checked["inputs_checked"] == _every_set(report)
    x = torch.randn(largest, *inputs[0].shape[1:])
    torch.testing.assert_close(fast(x), _eager(model, x), rtol=1e-4, atol=1e-5)


def test_a_pytorch_runtime_wrong_only_at_a_large_set_is_not_used(mlp, monkeypatch):
    """Right on the example and the per-pass sets, wrong from batch 8 on: the graph it runs is
    never returned; the model runs eagerly, and the report names the shape."""
    model, inputs = mlp
    real = TorchRuntime.forward
    monkeypatch.setattr(TorchRuntime, "forward",
                        lambda self, *args: real(self, *args) + (1.0 if args[0].shape[0] >= 8 else 0.0))
    fast = accelc.accelerate(model, inputs, backend="torch")
    report = fast.report
    assert report["fallback"].startswith("the optimised graph disagrees with eager (at input shapes (")
    assert not report["verification"]["ok"]
    x = torch.randn(8, *inputs[0].shape[1:])
    torch.testing.assert_close(fast(x), _eager(model, x))


def test_a_named_backend_wrong_at_a_large_set_gives_way_to_the_pytorch_runtime(mlp, monkeypatch):
    from accelc.runtime.onnxruntime import OrtRuntime

    model, inputs = mlp
    real = OrtRuntime.forward
    monkeypatch.setattr(OrtRuntime, "forward",
                        lambda self, *args: real(self, *args) + (1.0 if args[0].shape[0] >= 8 else 0.0))
    runs = _batches_run(monkeypatch)
    fast = accelc.accelerate(model, inputs, backend="onnxruntime")
    report = fast.report
    assert report["backend"] == "torch" and report["fallback"] is None
    assert report["backend_fallback"].startswith("ONNX Runtime disagrees with eager (at input shapes (")
    largest = _largest_batch(report)
    at_largest = [kind for kind, batch in runs if batch == largest and kind != type(model).__name__]
    assert at_largest == ["OrtRuntime", "TorchRuntime"]
    assert report["verification"]["ok"] and report["verification"]["inputs_checked"] == _every_set(report)
    x = torch.randn(largest, *inputs[0].shape[1:])
    torch.testing.assert_close(fast(x), _eager(model, x), rtol=1e-4, atol=1e-5)


def test_a_named_backend_builds_the_pytorch_runtime_only_when_it_fails(monkeypatch, tmp_path):
    """--backend onnxruntime: no lowering stage while ONNX Runtime serves; when it disagrees at a
    large set, the PyTorch runtime is built then, checked on every set, and serves."""
    from accelc.runtime.onnxruntime import OrtRuntime

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    inputs = (torch.randn(2, 8),)
    served = accelc.accelerate(model, inputs, backend="onnxruntime").report
    assert served["backend"] == "onnxruntime" and "runtime_lowering" not in served
    assert "lowering stage" not in served["build_seconds"]

    real = OrtRuntime.forward
    monkeypatch.setattr(OrtRuntime, "forward", lambda self, *args: real(self, *args) + (1.0 if args[0].shape[0] >= 8 else 0.0))
    fast = accelc.accelerate(model, inputs, backend="onnxruntime")
    report = fast.report
    assert report["backend"] == "torch" and "ONNX Runtime disagrees with eager" in report["backend_fallback"]
    assert report["runtime_lowering"] and report["verification"]["inputs_checked"] > 4
    x = torch.randn(8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)

    # Saved and loaded in a fresh process: the lowering stage it ran is replayed, other batches answered.
    fast.save(str(tmp_path / "out"))
    checks = [(b, torch.randn(b, 8)) for b in (1, 3, 8)]
    with torch.inference_mode():
        torch.save([(x, model(x)) for _, x in checks], tmp_path / "checks.pt")
    script = textwrap.dedent(f"""
        import torch, accelc
        loaded = accelc.load({str(tmp_path / "out")!r})
        assert type(loaded.runner).__name__ == "TorchRuntime", type(loaded.runner)
        with torch.inference_mode():
            for x, expected in torch.load({str(tmp_path / "checks.pt")!r}):
                torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
