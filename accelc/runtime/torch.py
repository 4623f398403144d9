"""The PyTorch runtime: run the optimised ``fx.GraphModule`` as an ordinary module, CPU or CUDA."""

from __future__ import annotations

import torch
import torch.fx

from ..patterns import fetch_attr


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``--device``; CUDA asked for but absent is a user error, not a crash later."""
    from ..errors import UserInputError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserInputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but CUDA is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


def to_device(inputs: tuple, device: torch.device) -> tuple:
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)


def flat_callable(gm: torch.fx.GraphModule):
    """``gm`` as a plain Python function of its positional tensors, or None where that cannot be.

    A captured GraphModule spends a few microseconds per call on its pytree input/output codec,
    ``nn.Module.__call__`` and ``getattr`` chains down to each weight; for a 0.1 ms model that is
    a tenth of its latency. The same graph, generated as a function whose weights are plain
    attributes of one namespace, runs the same ops without that overhead.
    """
    import copy
    import types

    from torch.utils import _pytree as pytree

    from ..outputs import spec_children

    codegen = gm.graph._codegen
    info = getattr(codegen, "pytree_info", None)
    if any(n.op in ("call_module", "call_method") for n in gm.graph.nodes):
        return None
    if info is not None and info.in_spec is not None:
        # Only forward(*tensors): the spec must unflatten leaf i to positional argument i.
        count = info.in_spec.num_leaves
        structure = pytree.tree_unflatten(list(range(count)), info.in_spec)
        if not (isinstance(structure, tuple) and len(structure) == 2 and structure[1] == {}
                and isinstance(structure[0], (tuple, list)) and list(structure[0]) == list(range(count))):
            return None
    graph = copy.deepcopy(gm.graph)
    graph.set_codegen(torch.fx.graph.CodeGen())
    weights = types.SimpleNamespace()
    for node in graph.nodes:
        if node.op == "get_attr":
            flat_name = f"w{len(vars(weights))}"
            setattr(weights, flat_name, fetch_attr(gm, node.target))
            node.target = flat_name
    code = graph.python_code(root_module="self")
    namespace = dict(code.globals)
    exec(compile(code.src, "<accelc flat graph>", "exec"), namespace)  # noqa: S102 - fx's own generated code
    forward = namespace["forward"]
    out_spec = info.out_spec if info is not None else None
    if out_spec is not None and out_spec.is_leaf():
        return lambda *args: forward(weights, *args)[0]
    if out_spec is not None and out_spec.type is tuple and all(c.is_leaf() for c in spec_children(out_spec)):
        return lambda *args: tuple(forward(weights, *args))  # captured graphs return flat tuples
    if out_spec is not None:
        return lambda *args: pytree.tree_unflatten(forward(weights, *args), out_spec)
    return lambda *args: forward(weights, *args)


class TorchRuntime(torch.nn.Module):
    """Runs a graph (the lowering stage's output, :func:`accelc.pipeline.lower`) under
    ``inference_mode`` after moving inputs to its device. It applies no pass itself."""

    def __init__(self, graph_module: torch.fx.GraphModule, device: torch.device, example_inputs: tuple = ()):
        super().__init__()
        self.lowered = graph_module
        self.device = device
        self._on_cpu = device.type == "cpu"
        self._call = self._checked_flat_callable(example_inputs) or self.lowered

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() replace the module's tensors; the flat function holds the old ones.
        result = super()._apply(fn, *args, **kwargs)
        self._call = self.lowered
        return result

    def _checked_flat_callable(self, example_inputs: tuple):
        """The flat function when it gives the graph's outputs on the example inputs, else None."""
        from ..verify import compare_outputs

        try:
            fast = flat_callable(self.lowered)
            if fast is None or not example_inputs:
                return None
            with torch.inference_mode():
                ok = compare_outputs(fast(*example_inputs), self.lowered(*example_inputs), lambda d: (0.0, 0.0)).ok
        except Exception:  # an unusual graph the plain codegen cannot express: keep the module
            return None
        return fast if ok else None

    def forward(self, *args):
        # This sits on every call: skip the device move and the mode switch when they are no-ops,
        # since for small models they cost as much as the model itself.
        if not (self._on_cpu and all(not isinstance(x, torch.Tensor) or x.is_cpu for x in args)):
            args = to_device(args, self.device)
        if torch.is_inference_mode_enabled():
            return self._call(*args)
        with torch.inference_mode():
            return self._call(*args)
