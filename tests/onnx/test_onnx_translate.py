"""The export's translation without torch.onnx's decomposition retrace (accelc.onnx.translate):
the few ops it would decompose are rewritten on the program's graph, the result is right at
other sizes, and a write that another name could see sends the graph through torch.onnx's own
decomposition instead."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from accelc.capture import graph_module_from_program
from accelc.onnx import translate
from accelc.onnx.export import OPSET, export_graph
from accelc.onnx.optimize import run_all_in_ort
from accelc.verify import compare_outputs


class Rewritable(torch.nn.Module):
    """Every op the module rewrites: in-place ops on fresh values (one read before the writes), to(),
    a bool and, a global pool, a diff with prepend."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, ids):
        y = self.conv(x)
        peak = y.amax(dim=(2, 3))                              # read before the writes: sees y unwritten
        y.relu_()
        y.add_(self.conv(x))                                   # ResNet's residual add_
        pooled = torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        keep = (ids > 3) & (ids < 40)                           # aten.__and__
        steps = torch.diff(ids, prepend=ids[:, :1] - 1, dim=-1)  # GPT-2's mask code
        mask = keep.to(torch.float32).sum(1, keepdim=True)      # aten.to.dtype
        return pooled * mask + steps.to(x.device, torch.float32).sum(1, keepdim=True) + peak


class WritesThroughAView(torch.nn.Module):
    """A write through a view of a fresh value: the value must see it."""

    def forward(self, x):
        y = x * 2
        y[:, 0].mul_(3)
        return y + 1


class ViewTakenBeforeTheWrite(torch.nn.Module):
    """A view taken before an in-place write still sees the write."""

    def forward(self, x):
        y = x * 2
        first = y[:, 0]
        y.add_(1)
        return first * 1


class WritesThroughTo(torch.nn.Module):
    """to() of a float32 tensor returns the tensor itself, so a write to its result writes both."""

    def forward(self, x):
        y = x * 2
        y.to(torch.float32).add_(1)
        return y * 3


def _program(model, inputs, spec):
    gm = graph_module_from_program(torch.export.export(model, inputs, dynamic_shapes=spec, strict=False))
    return gm, torch.export.export(gm, inputs, dynamic_shapes=spec, strict=False)


def _check_everywhere(model, gm, inputs, spec, feeds, tmp_path, names):
    export = export_graph(gm, inputs, str(tmp_path), dynamic_shapes=spec)
    assert export.exporter == "dynamo" and not export.attempts
    for feed, got in zip(feeds, run_all_in_ort(export.model, feeds, names)):
        with torch.inference_mode():
            expected = model(*feed)
        check = compare_outputs(got, list(expected) if isinstance(expected, tuple) else [expected])
        assert check.ok, (tuple(feed[0].shape), check.message)
    return export


def _feeds(shapes):
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(b, 3, h, h, generator=gen), torch.randint(0, 50, (b, s), generator=gen)) for b, h, s in shapes]


def test_the_rewritten_ops_need_no_decomposition_and_are_right_at_other_sizes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Rewritable().eval()
    inputs = _feeds([(2, 8, 6)])[0]
    spec = ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}, {0: Dim.AUTO, 1: Dim.AUTO})
    gm, program = _program(model, inputs, spec)
    before = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.relu_.default", "aten.add_.Tensor", "aten.__and__.Tensor", "aten.diff.default",
            "aten.adaptive_avg_pool2d.default"} <= before  # what torch.onnx would decompose is there
    assert translate.ops_to_decompose(program.graph_module, translate.registry(OPSET)) == []
    # The nodes a rewrite makes carry the source of the node they replace (torch.onnx names the
    # ONNX nodes from it, and warns per node without it).
    made = [n for n in program.graph.nodes if n.op == "call_function" and str(n.target) in
            ("aten.cat.default", "aten.slice.Tensor", "aten.sub.Tensor")]
    assert made and all(n.meta.get("nn_module_stack") is not None for n in made)

    decomposed = []
    from torch.onnx._internal.exporter import _core
    real = _core._prepare_exported_program_for_export
    monkeypatch.setattr(_core, "_prepare_exported_program_for_export", lambda *a, **k: decomposed.append(1) or real(*a, **k))
    _check_everywhere(model, gm, inputs, spec, _feeds([(1, 5, 2), (2, 8, 6), (4, 11, 17)]), tmp_path, ["x", "ids"])
    assert decomposed == []


@pytest.mark.parametrize("module", [WritesThroughAView, ViewTakenBeforeTheWrite, WritesThroughTo])
def test_a_write_another_name_sees_goes_through_torch_onnx_decomposition(module, tmp_path, monkeypatch):
    model = module().eval()
    inputs = (torch.randn(3, 4),)
    spec = ({0: Dim.AUTO},)
    gm, program = _program(model, inputs, spec)
    left = translate.ops_to_decompose(program.graph_module, translate.registry(OPSET))
    assert any(op.endswith("_.Tensor") for op in left), left

    decomposed = []
    from torch.onnx._internal.exporter import _core
    real = _core._prepare_exported_program_for_export
    monkeypatch.setattr(_core, "_prepare_exported_program_for_export", lambda *a, **k: decomposed.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(3)
    feeds = [(torch.randn(n, 4, generator=gen),) for n in (2, 3, 9)]
    _check_everywhere(model, gm, inputs, spec, feeds, tmp_path, ["x"])
    assert decomposed


def test_rewriting_twice_changes_nothing():
    model = Rewritable().eval()
    inputs = _feeds([(2, 8, 6)])[0]
    _, program = _program(model, inputs, None)
    translate.ops_to_decompose(program.graph_module, translate.registry(OPSET))
    once = program.graph_module.code
    assert translate.ops_to_decompose(program.graph_module, translate.registry(OPSET)) == []
    assert program.graph_module.code == once


def test_the_translations_are_built_once(monkeypatch):
    from torch.onnx._internal.exporter import _registration

    translate.registry.cache_clear()
    built = []
    real = _registration.ONNXRegistry.from_torchlib
    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib",
                        classmethod(lambda cls, *a, **k: built.append(1) or real(*a, **k)))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    for _ in range(2):
        _, program = _program(model, (torch.randn(2, 4),), None)
        translate.export_program(program, (torch.randn(2, 4),), OPSET)
    assert built == [1]


def test_without_torch_onnx_internals_the_public_exporter_runs(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("torch.onnx._internal.exporter"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    _, program = _program(model, (torch.randn(2, 4),), None)
    public = []
    monkeypatch.setattr(translate, "_public_export", lambda *a: public.append(1) or None)
    monkeypatch.setattr(builtins, "__import__", refuse)
    translate.export_program(program, (torch.randn(2, 4),), OPSET)
    assert public == [1]


def test_a_rewrite_that_raises_leaves_the_graph_to_torch_onnx_decomposition(tmp_path, monkeypatch):
    model = Rewritable().eval()
    inputs = _feeds([(2, 8, 6)])[0]
    spec = ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}, {0: Dim.AUTO, 1: Dim.AUTO})
    gm, _ = _program(model, inputs, spec)

    def fails(graph, node):
        raise RuntimeError("a graph the rewrites did not foresee")

    monkeypatch.setattr(translate, "_diff", fails)
    _check_everywhere(model, gm, inputs, spec, _feeds([(1, 5, 2), (4, 11, 17)]), tmp_path, ["x", "ids"])
