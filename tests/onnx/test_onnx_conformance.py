"""Conformance of the onnx stage: every pass registered in ``accelc.onnx_passes`` over every
small sample's dynamic export, through the one PassManager with ONNX Runtime checking it at
several sizes. A pass must never be failed or rolled back there, and must be idempotent: a
second run changes nothing. A pass added to the entry points is picked up here without editing
this file (the fx passes' twin is tests/passes/test_conformance.py)."""

from __future__ import annotations

from importlib.metadata import entry_points

import onnx_ir as ir
import pytest

from accelc.onnx.optimize import OrtVerifier
from accelc.pass_base import PassContext
from accelc.pass_manager import FIRED, UNCHANGED, PassManager
from accelc.registry import GROUPS, Registry
from accelc.verify import tolerance_for_precision

from onnx_samples import POINTS, captured_dynamic, eager_outputs, exported_dynamic, inputs_at

PASSES = sorted({ep.name for ep in entry_points(group=GROUPS["onnx"])})
SAMPLES = ["mlp", "cnn", "bert", "gpt2", "vit"]


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_onnx_pass_on_sample(pass_name, sample, export_root, tmp_path):
    _, inputs, _, gm = captured_dynamic(sample)
    cases = [(x, eager_outputs(sample, x)) for x in [inputs] + [inputs_at(sample, p) for p in POINTS[sample][1:3]]]
    verifier = OrtVerifier(cases, [n.name for n in gm.graph.nodes if n.op == "placeholder"],
                           tolerance_for_precision("fp32"))
    manager = PassManager([Registry.discover().create("onnx", pass_name)], stage="onnx", verifier=verifier)
    model = ir.serde.deserialize_model(exported_dynamic(sample, export_root).model)
    once, (record,) = manager.run(model, PassContext())
    assert record.status in (FIRED, UNCHANGED), f"{pass_name} on {sample}: {record.status}: {record.reason}"
    _, (again,) = manager.run(once, PassContext())
    assert again.status == UNCHANGED, f"{pass_name} is not idempotent on {sample}: second run {again.stats}"
