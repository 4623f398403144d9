"""Partial export: ops ONNX cannot express stay in PyTorch, the rest runs in ONNX Runtime.

    gm ──capability split──► [ORT part] → [torch part: custom op] → [ORT part]
        (CapabilityBasedPartitioner: maximal connected groups of exportable nodes, each fused
         into a submodule, exported on its own and replaced by an OrtRuntime)

An op is exportable when it is an ATen/prims op (the exporter translates or decomposes every
one of those) or any op with an ONNX translation in torch.onnx's registry. Everything else (a
``torch.library`` custom op, an op of an extension) keeps its node, and the report names the op
and the user's source line.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import torch.fx
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase
from torch.utils import _pytree as pytree

from ..pass_base import Pass, PassContext
from ..source import node_location

log = logging.getLogger(__name__)

_BUILTIN_NAMESPACES = ("aten", "prims")


@functools.lru_cache(maxsize=1)
def _onnx_registry():
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    return ONNXRegistry.from_torchlib()


def is_exportable(node: torch.fx.Node) -> bool:
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return True  # operator.getitem and friends: the exporter handles Python builtins
    if target.namespace in _BUILTIN_NAMESPACES:
        return True
    return _onnx_registry().is_registered(target)


def unexportable_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and not is_exportable(n)]


class _Exportable(OperatorSupportBase):
    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:
        return node.op == "call_function" and is_exportable(node)


def describe(nodes: list[torch.fx.Node]) -> list[dict]:
    return [{"op": str(n.target), "node": n.name, "location": node_location(n)} for n in nodes]


def _inline_constants(parent: torch.fx.GraphModule, call: torch.fx.Node, sub: torch.fx.GraphModule) -> None:
    """Move weights (``get_attr`` arguments) into the submodule, so they export as initializers."""
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    keep = []
    for arg, ph in zip(call.args, placeholders):
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            name = f"_const_{len(keep)}_{ph.name}"
            sub.register_buffer(name, functools.reduce(getattr, arg.target.split("."), parent), persistent=True)
            with sub.graph.inserting_before(ph):
                const = sub.graph.get_attr(name)
            const.meta = dict(ph.meta)
            ph.replace_all_uses_with(const)
            sub.graph.erase_node(ph)
        else:
            keep.append(arg)
    call.args = tuple(keep)
    sub.recompile()


def split_for_onnx(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, list[str]]:
    """Fuse exportable regions of (a copy of) ``gm`` into ``fused_N`` submodules; their names."""
    import copy

    gm = copy.deepcopy(gm)
    partitioner = CapabilityBasedPartitioner(gm, _Exportable(), allows_single_node_partition=True)
    split = partitioner.fuse_partitions(partitioner.propose_partitions())
    names = []
    for node in list(split.graph.nodes):
        if node.op == "call_module" and node.target.startswith("fused_"):
            _inline_constants(split, node, getattr(split, node.target))
            names.append(node.target)
    split.graph.eliminate_dead_code()
    split.delete_all_unused_submodules()
    split.recompile()
    return split, names


def submodule_cases(split: torch.fx.GraphModule, names: list[str], inputs: tuple) -> dict[str, tuple[tuple, list]]:
    """Each fused submodule's (inputs, flat outputs) when the split graph runs once on ``inputs``:
    its example and its reference answers, from PyTorch."""
    seen: dict[str, tuple[tuple, list]] = {}

    def detached(values):
        return tuple(v.detach().clone() if isinstance(v, torch.Tensor) else v for v in values)

    class Recorder(torch.fx.Interpreter):
        def call_module(self, target, args, kwargs):
            out = super().call_module(target, args, kwargs)
            if target in names and target not in seen:
                seen[target] = (detached(args), list(detached(pytree.tree_leaves(out))))
            return out

    # no_grad, not inference_mode: torch.export refuses inference tensors as example inputs.
    with torch.no_grad():
        Recorder(split).run(*inputs)
    return seen


def _symbol_dims(gm: torch.fx.GraphModule, dynamic_shapes) -> dict[str, object]:
    """torch's symbol (``s77``) of each dynamic dim of ``gm``'s inputs ==> the spec's ``Dim`` for it."""
    out: dict[str, object] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, axes in zip(placeholders, dynamic_shapes):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for d, dim in (axes or {}).items():
            size = val.shape[d] if d < val.dim() else None
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                out.setdefault(str(size.node.expr), dim)
    return out


def submodule_dynamic_shapes(sub: torch.fx.GraphModule, symbols: dict[str, object]):
    """torch.export's spec for a fused submodule: each input dim whose recorded size is one of the
    parent's dynamic symbols gets the parent's ``Dim`` (so "batch" stays "batch"); a dim whose size
    is an expression of them (``s0*s1`` after a flatten) gets ``Dim.AUTO``. None when all are static."""
    spec, dynamic = [], False
    for node in sub.graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        axes = {}
        if isinstance(val, torch.Tensor):
            for d, size in enumerate(val.shape):
                if isinstance(size, torch.SymInt) and size.node.expr.free_symbols:
                    axes[d] = symbols.get(str(size.node.expr), torch.export.Dim.AUTO)
        spec.append(axes or None)
        dynamic = dynamic or bool(axes)
    return tuple(spec) if dynamic else None


def build_partial(gm: torch.fx.GraphModule, inputs: tuple, device, ctx: PassContext, passes: list[Pass], workdir: str,
                  unsupported: list[torch.fx.Node], build_region, *, dynamic_shapes=None,
                  probe_inputs: list[tuple] | None = None, on_progress=None):
    """Each exportable region becomes an ONNX Runtime module inside a torch GraphModule; returns
    (module, report).

    ``build_region(sub, example, device, ctx, passes, workdir, *, dynamic_shapes, cases,
    on_progress) -> (runtime, report)`` builds one region in its own folder under ``workdir``
    (:mod:`accelc.onnx.build` passes its own, so this module imports no runtime). Each region
    is checked on the inputs it sees, against the answers PyTorch gives there, on the example
    and at each of ``probe_inputs`` (those a static region cannot take are skipped). With
    ``dynamic_shapes`` (torch.export's spec for ``inputs``), each region is exported with the
    dims its inputs share with the graph's inputs dynamic; the regions' examples are then
    recorded on the example with its dynamic sizes of 1 grown to 2, so no region sees a size
    torch.export would pin.
    """
    from .export import grow_inputs

    split, names = split_for_onnx(gm)
    if dynamic_shapes is not None:
        inputs = grow_inputs(inputs, dynamic_shapes)
        symbols = _symbol_dims(gm, dynamic_shapes)
    examples = submodule_cases(split, names, inputs)
    probes = [submodule_cases(split, names, p) for p in (probe_inputs or [])]
    parts = {}
    for name in names:
        sub = getattr(split, name)
        spec = submodule_dynamic_shapes(sub, symbols) if dynamic_shapes is not None else None
        cases = [examples[name], *(p[name] for p in probes if name in p)]
        runtime, part_report = build_region(sub, examples[name][0], device, ctx, passes, os.path.join(workdir, name),
                                            dynamic_shapes=spec, cases=cases, on_progress=on_progress)
        setattr(split, name, runtime)  # call_module now calls ONNX Runtime
        parts[name] = part_report
    report = {"partial": True, "kept_in_pytorch": describe(unsupported), "onnx_parts": parts}
    for item in report["kept_in_pytorch"]:
        log.info("accelc: %s stays in PyTorch (ONNX cannot express it)%s", item["op"],
                 f" at {item['location']}" if item["location"] else "")
    return split, report


__all__ = ["is_exportable", "unexportable_nodes", "split_for_onnx", "submodule_cases", "build_partial"]
