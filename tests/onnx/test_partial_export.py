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


def test_parts_keep_the_dynamic_batch(tmp_path):
    """With a dynamic batch each ORT part is exported with it (the parent's Dim, by name) and
    checked on the inputs it sees at every probe; the assembled module runs other batch sizes."""
    from accelc.capture import graph_module_from_program

    torch.manual_seed(0)
    model, inputs = WithCustomOp().eval(), (torch.randn(1, 16),)
    spec = ({0: torch.export.Dim("batch", min=1, max=256)},)
    program = torch.export.export(model, (torch.cat([inputs[0]] * 2),), dynamic_shapes=spec, strict=False)
    gm = graph_module_from_program(program)
    probes = [(torch.randn(3, 16),), (torch.randn(8, 16),)]
    module, report = build_onnx_runtime(gm, inputs, "cpu", "fp32", str(tmp_path), dynamic_shapes=spec, probe_inputs=probes)
    assert report["partial"] and len(report["onnx_parts"]) == 2
    for part in report["onnx_parts"].values():
        assert list(part["export"]["dynamic_axes"].values()) == [{"0": "batch"}], part["export"]
        assert part["probes"] == {"checked": 2, "skipped": 0} and part["verification"]["ok"]
    for x in (inputs[0], *[p[0] for p in probes], torch.randn(5, 16)):
        with torch.inference_mode():
            expected = model(x)
        assert compare_outputs(module(x), expected).ok
