"""Partial export: a custom op ONNX cannot express stays in PyTorch; the rest runs in ORT."""

from __future__ import annotations

import torch

from accelc.capture import capture
from accelc.runtime.onnxruntime import OrtRuntime, build_onnx_runtime
from accelc.verify import compare_outputs


@torch.library.custom_op("accelc_test::soft_clip", mutates_args=())
def soft_clip(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + x.abs())


@soft_clip.register_fake
def _(x):
    return torch.empty_like(x)


class WithCustomOp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = soft_clip(h)  # the op ONNX cannot express
        return self.b(h) * 2


def test_custom_op_stays_in_pytorch_rest_in_ort(tmp_path):
    torch.manual_seed(0)
    model, inputs = WithCustomOp().eval(), (torch.randn(4, 16),)
    gm = capture(model, inputs).graph_module
    module, report = build_onnx_runtime(gm, inputs, "cpu", "fp32", str(tmp_path))
    assert report["partial"]
    kept = report["kept_in_pytorch"]
    assert [k["op"] for k in kept] == ["accelc_test.soft_clip.default"]
    assert kept[0]["location"] and kept[0]["location"].endswith(f"test_partial_export.py:{_line_of('soft_clip(h)')}")
    assert len(report["onnx_parts"]) == 2
    assert sum(isinstance(m, OrtRuntime) for m in module.children()) == 2
    with torch.inference_mode():
        expected = model(*inputs)
    assert compare_outputs(module(*inputs), expected).ok


def _line_of(text: str) -> int:
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line and "def " not in line and "custom_op" not in line)
