"""Partial export: a custom op ONNX cannot express stays in PyTorch; the rest runs in ORT."""

from __future__ import annotations

import gc
import os

import torch

from accelc.capture import capture
from accelc.runtime.onnxruntime import OrtRuntime
from accelc.verify import compare_outputs

from onnx_samples import build


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


def test_custom_op_stays_in_pytorch_rest_in_ort():
    torch.manual_seed(0)
    model, inputs = WithCustomOp().eval(), (torch.randn(4, 16),)
    gm = capture(model, inputs).graph_module
    module, report = build(gm, inputs, "cpu")
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


def test_parts_keep_the_dynamic_batch():
    """With a dynamic batch each ORT part is exported with it (the parent's Dim, by name) and
    checked on the inputs it sees at every probe; the assembled module runs other batch sizes."""
    from accelc.capture import graph_module_from_program

    torch.manual_seed(0)
    model, inputs = WithCustomOp().eval(), (torch.randn(1, 16),)
    spec = ({0: torch.export.Dim("batch", min=1, max=256)},)
    program = torch.export.export(model, (torch.cat([inputs[0]] * 2),), dynamic_shapes=spec, strict=False)
    gm = graph_module_from_program(program)
    probes = [(torch.randn(3, 16),), (torch.randn(8, 16),)]
    module, report = build(gm, inputs, "cpu", dynamic_shapes=spec, probe_inputs=probes)
    assert report["partial"] and len(report["onnx_parts"]) == 2
    for part in report["onnx_parts"].values():
        assert list(part["export"]["dynamic_axes"].values()) == [{"0": "batch"}], part["export"]
        assert part["probes"] == {"checked": 2, "skipped": 0}
    for x in (inputs[0], *[p[0] for p in probes], torch.randn(5, 16)):
        with torch.inference_mode():
            expected = model(x)
        assert compare_outputs(module(x), expected).ok


def test_the_partial_module_owns_the_regions_folder(tmp_path, monkeypatch):
    """The regions are built in folders inside one temporary folder, owned by the GraphModule
    that holds them (its regions own nothing): it goes with close(), or with the module."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    torch.manual_seed(0)
    model, inputs = WithCustomOp().eval(), (torch.randn(4, 16),)
    gm = capture(model, inputs).graph_module
    for ending in ("close", "collect"):
        module, _ = build(gm, inputs, "cpu", passes=[])
        regions = [m for m in module.children() if isinstance(m, OrtRuntime)]
        folders = {os.path.dirname(os.path.dirname(r.model_path)) for r in regions}
        assert len(regions) == 2 and len(folders) == 1 and os.listdir(tmp_path) == [os.path.basename(*folders)]
        if ending == "close":
            module.close()
            assert os.listdir(tmp_path) == []
        del module, regions
        gc.collect()
        assert os.listdir(tmp_path) == []
