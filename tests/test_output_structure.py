"""Outputs keep their structure, and artifacts never need the model's classes to load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import accelc
from accelc.outputs import OutputStructure


@pytest.fixture(scope="module")
def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    model = DistilBertModel(config).eval()
    for name, p in model.named_parameters():  # random biases and norm weights, not the zeros/ones defaults
        if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
            torch.nn.init.normal_(p, mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
    return model, (torch.randint(0, 100, (1, 8)),)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_model_output_round_trip_without_transformers(distilbert, backend, tmp_path):
    from transformers.modeling_outputs import BaseModelOutput

    if backend == "openvino":
        pytest.importorskip("openvino")
    model, inputs = distilbert
    fast = accelc.accelerate(model, inputs, backend=backend)
    assert fast.report["backend"] == backend
    out = fast(*inputs)
    assert isinstance(out, BaseModelOutput)
    torch.testing.assert_close(out.last_hidden_state, model(*inputs).last_hidden_state, rtol=1e-4, atol=1e-5)
    folder = tmp_path / "artifact"
    fast.save(str(folder))

    x = torch.randint(0, 100, (3, 11))
    torch.save((x, model(x).last_hidden_state.detach()), tmp_path / "check.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["transformers"] = None  # importing it now fails: this process cannot know its classes
        import torch
        x, expected = torch.load({str(tmp_path / "check.pt")!r})
        program = torch.export.load({str(folder / "model.pt2")!r})
        plain = program.module()(x)
        assert isinstance(plain, tuple), type(plain)
        torch.testing.assert_close(plain[0], expected, rtol=1e-4, atol=1e-5)
        import accelc
        loaded = accelc.load({str(folder)!r})(x)
        assert type(loaded) is dict and list(loaded) == ["last_hidden_state"], loaded
        torch.testing.assert_close(loaded["last_hidden_state"], expected, rtol=1e-4, atol=1e-5)
        assert "transformers" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]

    again = accelc.load(str(folder))  # here transformers can be imported: the class comes back
    loaded = again(x)
    assert isinstance(loaded, BaseModelOutput)
    torch.testing.assert_close(loaded.last_hidden_state, model(x).last_hidden_state, rtol=1e-4, atol=1e-5)


def test_nested_structures_pack_back():
    structure = OutputStructure({"kind": "dict", "keys": ["a", "b"], "children": [
        {"kind": "leaf"}, {"kind": "tuple", "children": [{"kind": "leaf"}, {"kind": "leaf"}]}]})
    packed = structure.packer()((1, 2, 3))
    assert packed == {"a": 1, "b": (2, 3)}
    assert OutputStructure.from_dict(structure.as_dict()).packer()((1, 2, 3)) == packed
    unknown = OutputStructure({"kind": "mapping", "class": "no_such_module:Output", "keys": ["x"],
                               "children": [{"kind": "leaf"}]})
    assert unknown.packer()((5,)) == {"x": 5}
