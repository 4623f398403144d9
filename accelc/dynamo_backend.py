"""``torch.compile(model, backend="accelc")``: the same passes on Dynamo's graphs, for inference.

Dynamo hands in a torch-level GraphModule whose parameters and buffers arrive as inputs. For
inference the backend freezes them: each input Dynamo marks as a static module attribute becomes
a constant of the graph, so passes can fold them (as Inductor's freezing does). The frozen graph
then goes down the same line as ``accelc.accelerate``: torch.export capture, passes with
verification, final check. Anything that fails falls back to Dynamo's own graph, which gives
eager's answers, and says so in the log.

Frozen weights are read once: train the model (or edit weights) and you must compile again.
Under ``torch.is_grad_enabled()`` with inputs that require grad the backend does not freeze, so
training and autograd keep working on the unmodified graph.
"""

from __future__ import annotations

import logging
from collections import deque

import torch
import torch.fx

log = logging.getLogger(__name__)

# The reports of the most recent compilations, newest last (for tests and for curious users).
RECENT_REPORTS: deque = deque(maxlen=32)


def _is_static_attribute(node: torch.fx.Node) -> bool:
    return "_dynamo_static_input_type" in (node.meta.get("tensor_dict") or {})


def freeze_parameters(gm: torch.fx.GraphModule, example_inputs: list) -> tuple[torch.fx.GraphModule, list[int]]:
    """Turn parameter/buffer placeholders into constants; return the new module and the indices of
    the inputs that remain real inputs."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    frozen = torch.fx.GraphModule(gm, gm.graph)  # shares submodules; graph edited below is a copy
    frozen.graph = torch.fx.Graph()
    env: dict = {}
    real: list[int] = []
    for index, (node, value) in enumerate(zip(placeholders, example_inputs)):
        if _is_static_attribute(node) and isinstance(value, torch.Tensor):
            name = f"_frozen_{index}"
            frozen.register_buffer(name, value.detach())
            env[node] = frozen.graph.get_attr(name)
        else:
            env[node] = frozen.graph.placeholder(node.name)
            real.append(index)
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            env[node] = frozen.graph.node_copy(node, lambda n: env[n])
    frozen.recompile()
    return frozen, real


def accelc_backend(gm: torch.fx.GraphModule, example_inputs: list, **kwargs):
    """The Dynamo backend entry point (registered as ``accelc`` in ``torch_dynamo_backends``)."""
    from .api import accelerate

    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs):
        log.info("accelc backend: gradients are enabled; running Dynamo's graph unmodified (wrap inference in torch.no_grad())")
        return gm.forward
    if any(not isinstance(x, torch.Tensor) for x in example_inputs):
        log.info("accelc backend: symbolic or non-tensor inputs; running Dynamo's graph unmodified")
        return gm.forward
    try:
        frozen, real = freeze_parameters(gm, example_inputs)
        real_inputs = tuple(example_inputs[i] for i in real)
        device = real_inputs[0].device if real_inputs else torch.device("cpu")
        with torch.no_grad():
            # Dynamo guards the shapes of this graph itself (and recompiles for others): capture static.
            fast = accelerate(frozen, real_inputs, backend="torch", device=device, dynamic=False)
    except Exception as exc:  # never break the user's torch.compile: fall back to the eager graph
        log.warning("accelc backend: falling back to the unmodified graph: %s: %s", type(exc).__name__, exc)
        return gm.forward
    RECENT_REPORTS.append(fast.report)
    if not fast.captured:
        log.warning("accelc backend: %s", fast.report.get("fallback"))
        return gm.forward

    def run(*args):
        out = fast(*(args[i] for i in real))
        return out if isinstance(out, (tuple, list)) else (out,)

    return run
