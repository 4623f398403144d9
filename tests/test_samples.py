"""Every bundled sample, full size, through the command line: optimize, load, compare, run.

The PyTorch backend keeps this under a minute per sample on two cores; the ONNX Runtime path is
exercised end to end on the same architectures (small configs) in tests/onnx.
"""

import json

import pytest
import torch

import accelc
from accelc.loader import load_model_file
from support import SAMPLES

SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_samples_are_all_covered():
    assert {"cnn.py", "mlp.py", "bert.py", "gpt2.py", "vit.py", "resnet50.py"} <= set(SAMPLE_FILES)


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_optimize_load_run(cli, tmp_path, sample):
    out = tmp_path / "out"
    code, stdout, stderr = cli("optimize", SAMPLES / sample, "-o", out, "--no-bench", "--backend", "torch")
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["capture"]["ok"] and report["verification"]["ok"] and report["fallback"] is None
    assert not [p for p in report["passes"] if p["status"] in ("rolled back", "failed")], report["passes"]

    loaded = load_model_file(str(SAMPLES / sample))
    fast = accelc.load(str(out))
    with torch.inference_mode():
        expected = loaded.module(*loaded.inputs)
        got = fast(*loaded.inputs)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * max(1.0, float(b.abs().max())))

    code, stdout, stderr = cli("run", out, "--seconds", "0.2")
    assert code == 0 and "latency: median" in stdout, stderr
