"""Capture: ATen graphs with constant weights; failures fall back to eager with the user's line."""

import torch

import accelc
from accelc.capture import capture
from accelc.patterns import aten, find_nodes
from support import TINY_CNN
from accelc.loader import load_model_file

UNTRACEABLE = """
import torch

class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1

def get_model():
    return DataDependent()

def get_inputs():
    return (torch.ones(2, 3),)
"""


def test_capture_gives_aten_graph_with_constant_weights(model_file):
    loaded = load_model_file(str(model_file(TINY_CNN)))
    cap = capture(loaded.module, loaded.inputs)
    assert cap.ok and cap.method == "torch.export (non-strict)"
    assert find_nodes(cap.graph_module, aten.conv2d) and find_nodes(cap.graph_module, aten.batch_norm)
    assert any(n.op == "get_attr" for n in cap.graph_module.graph.nodes)
    torch.testing.assert_close(cap.graph_module(*loaded.inputs), loaded.module(*loaded.inputs))


def test_value_dependent_control_flow_falls_back_to_eager_with_source_line(model_file):
    path = model_file(UNTRACEABLE)
    loaded = load_model_file(str(path))
    fast = accelc.accelerate(loaded.module, loaded.inputs, source_file=loaded.path)
    assert not fast.captured
    cap = fast.report["capture"]
    assert cap["ok"] is False and len(cap["attempts"]) == 2
    assert cap["location"].endswith("model.py:6"), cap["location"]
    assert "model.py:6" in fast.report["fallback"]
    for x in (torch.ones(2, 3), -torch.ones(2, 3)):  # both branches: eager's answers
        torch.testing.assert_close(fast(x), loaded.module(x))


def test_accelerated_module_skips_hook_bookkeeping_but_runs_registered_hooks():
    """The direct call path (no nn.Module.__call__) must not lose a hook a user registers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    fast = accelc.accelerate(model, (x,), backend="torch")
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x))
    seen = []
    handle = fast.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.inference_mode():
        fast(x)
    handle.remove()
    assert seen == [torch.Size([2, 8])]
    global_handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: seen.append("global"))
    try:
        with torch.inference_mode():
            fast(x)
    finally:
        global_handle.remove()
    assert "global" in seen
