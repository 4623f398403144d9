"""Every bad argument of accelerate() is refused before any capture, in one line naming it."""

import pytest
import torch

import accelc
import accelc.api
from accelc.errors import AccelcError


@pytest.mark.parametrize("options, message", [
    ({"backend": "tensorflow"}, "unknown backend 'tensorflow'"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"stages": 0}, "--stages needs at least 1"),
    ({"microbatches": 0}, "--microbatches needs at least 1"),
    ({"microbatches": 3, "stages": 2}, "--microbatches 3 needs every input's first dimension"),
    ({"microbatches": 2}, "--microbatches 2 applies to a graph cut into stages"),
    ({"profile": True}, "--profile applies to a graph cut into stages"),
    ({"devices": ["cpu", "tpu"]}, "device 'tpu'"),
    ({"branches": 0}, "--branches needs at least 1"),
    ({"branches": 2, "stages": 2}, "two ways to split one graph"),
    ({"passes": ["remove_noops", "no_such_pass"]}, "unknown pass 'no_such_pass'"),
    ({"disable": ["onnx:no_such_pass"]}, "unknown pass 'onnx:no_such_pass' in stage 'onnx'"),
    ({"passes": ["fuse_attention"]}, "write graph:fuse_attention or onnx:fuse_attention"),
    ({"precision": "int8", "backend": "torch"}, "--precision int8 is ONNX Runtime's"),
    ({"dynamic": {"time": (1, 4)}}, "time"),
])
def test_bad_arguments_are_refused_before_capture(monkeypatch, options, message):
    monkeypatch.setattr(accelc.api, "capture", lambda *a, **k: pytest.fail("captured before validating the arguments"))
    model = torch.nn.Linear(4, 4).eval()
    with pytest.raises(AccelcError) as info:
        accelc.accelerate(model, (torch.randn(2, 4),), **options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_pipelined_run_is_timed_at_the_whole_batch(monkeypatch):
    seen = []
    real = accelc.api.measure_latency

    def spy(model, fast, inputs, device, *args, **kwargs):
        seen.append(tuple(x.shape for x in inputs))
        return real(model, fast, inputs, device, seconds=0.2)

    monkeypatch.setattr(accelc.api, "measure_latency", spy)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    fast = accelc.accelerate(model, (torch.randn(8, 4),), backend="torch", stages=2, microbatches=4, measure=True)
    assert seen == [(torch.Size([8, 4]),)]
    assert "speedup" in fast.report["latency"]


@pytest.mark.parametrize("report, expected", [
    ({"latency": {"speedup": 1.4}}, None),
    ({"latency": {"speedup": 0.53}, "branches": {"workers": 2}}, "--branches workers cost more than they save here"),
    ({"latency": {"speedup": 0.34}, "partition": {"stages": 2}}, "they pay off with more cores per worker"),
    ({"latency": {"speedup": 0.9}}, "eager is the faster choice"),
])
def test_a_result_slower_than_eager_is_warned_about(report, expected):
    warning = accelc.api.slower_than_eager(report)
    assert (warning is None) if expected is None else (expected in warning and "slower than eager" in warning)
