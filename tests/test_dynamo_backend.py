"""torch.compile(model, backend="accelc"): found through torch's entry point, same passes, eager's answers."""

import importlib
import sys

import pytest
import torch

from accelc.dynamo_backend import RECENT_REPORTS
from support import SAMPLES


def _sample(name):
    if str(SAMPLES) not in sys.path:
        sys.path.insert(0, str(SAMPLES))
    module = importlib.import_module(name)
    return module.get_model(small=True).eval(), tuple(module.get_inputs(small=True))


def test_backend_is_registered_with_torch():
    from torch._dynamo import list_backends

    assert "accelc" in list_backends()


@pytest.mark.parametrize("name", ["cnn", "mlp", "bert", "gpt2", "vit", "resnet50"])
def test_compile_gives_eager_answers(name):
    torch._dynamo.reset()
    model, inputs = _sample(name)
    RECENT_REPORTS.clear()
    with torch.no_grad():
        expected = model(*inputs)
        compiled = torch.compile(model, backend="accelc")
        got = compiled(*inputs)
        again = compiled(*inputs)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(again, expected, rtol=1e-3, atol=1e-4)
    assert RECENT_REPORTS, "the backend did not run accelc's pipeline"
    report = RECENT_REPORTS[-1]
    assert report["capture"]["ok"] and report["verification"]["ok"]
    if name in ("cnn", "resnet50"):
        fired = {r["name"] for r in report["passes"] if r["status"] == "fired"}
        assert "fold_conv_bn" in fired


def test_training_mode_graph_is_left_alone():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    x = torch.randn(2, 4)
    RECENT_REPORTS.clear()
    out = torch.compile(model, backend="accelc")(x)
    out.sum().backward()  # gradients still flow: nothing was frozen
    assert model[0].weight.grad is not None and not RECENT_REPORTS


@pytest.mark.parametrize("name", ["bert", "cnn"])
def test_other_shapes_are_guarded_by_dynamo(name):
    """A second batch size or sequence length recompiles (Dynamo's guards) and still gives eager's answers."""
    torch._dynamo.reset()
    model, inputs = _sample(name)
    compiled = torch.compile(model, backend="accelc")
    shapes = [(1, None), (3, None), (2, 8)] if name == "bert" else [(1, None), (3, None), (2, 24)]
    with torch.no_grad():
        for batch, size in shapes:
            x = []
            for t in inputs:
                shape = list(t.shape)
                shape[0] = batch
                if size is not None:
                    shape[1 if t.dim() == 2 else 2] = size
                    if t.dim() == 4:
                        shape[3] = size
                x.append(torch.randint(0, 2, shape) if not t.is_floating_point() else torch.randn(shape))
            torch.testing.assert_close(compiled(*x), model(*x), rtol=1e-3, atol=1e-4)
