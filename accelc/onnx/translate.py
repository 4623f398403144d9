"""The dynamo exporter's translation, without its decomposition retrace where none is needed.

``torch.onnx.export`` runs ``ExportedProgram.run_decompositions`` before it translates: a second
trace of the whole graph, 2.2-2.7 s on BERT-base, ViT-base and GPT-2, one of the largest parts of
accelc's build. It decomposes only what torchlib (the ONNX translations torch.onnx ships) cannot
translate, and functionalises in-place ops. An optimised accelc graph has at most a handful of
those, so they are rewritten here, node by node, on the program's own graph:

    aten._assert_tensor_metadata(x, ...)           ─► (removed: a check, no value; torch.onnx drops it too)
    aten.to.device(x, device, dtype) / to.dtype    ─► aten._to_copy(x, dtype=dtype)
    aten.__and__ / __or__ / __xor__ (Tensor)        ─► aten.bitwise_and / bitwise_or / bitwise_xor
    aten.adaptive_avg_pool2d(x, [1, 1])            ─► aten.mean.dim(x, [-2, -1], keepdim=True)
    aten.diff(x, 1, d, prepend=p, append=a)        ─► y = cat([p, x, a], d); y[1:] - y[:-1] along d
    y = aten.op_(x, ...)  (in place, x not a view) ─► y = aten.op(x, ...); x's later users read y

``to`` may return its input itself where ``_to_copy`` copies; with no in-place op left in the
graph nothing can tell the two apart. An in-place op is made functional only when ``x`` is a
fresh value (not an input, a weight, or a view of anything, and with no view taken of it), so
no other name sees the write.

When every op of the graph is then one torchlib translates, and none writes in place, the program
is translated as it is; otherwise torch.onnx's own decomposition runs, as before, on the rewritten
graph. Either way the ONNX model is checked against the graph by the caller, as every export is.
The registry of translations is built once per process (0.35-0.86 s each time otherwise).

This reaches into ``torch.onnx._internal``; where those names differ (another torch), the
public ``torch.onnx.export`` runs instead.
"""

from __future__ import annotations

import functools
import logging
import operator
from typing import TYPE_CHECKING

import torch
import torch.fx

if TYPE_CHECKING:
    import onnx_ir as ir

log = logging.getLogger(__name__)

aten = torch.ops.aten

_RENAMED = {
    aten.__and__.Tensor: aten.bitwise_and.Tensor,
    aten.__or__.Tensor: aten.bitwise_or.Tensor,
    aten.__xor__.Tensor: aten.bitwise_xor.Tensor,
}
_TO = (aten.to.device, aten.to.dtype, aten.to.dtype_layout)
_END = torch.iinfo(torch.int64).max  # torch's "to the end" of a slice
_MAY_ALIAS = "accelc_may_alias"


def export_program(program: torch.export.ExportedProgram, inputs: tuple, opset: int) -> "ir.Model":
    """``program`` as an ONNX model at ``opset``, optimised by onnxscript as torch.onnx does; its
    weights are still the program's tensors (nothing is serialised here)."""
    try:
        from torch.onnx._internal._lazy_import import onnxscript_apis
        from torch.onnx._internal.exporter import _core, _fx_passes
    except ImportError:
        return _public_export(program, inputs, opset)
    try:
        needed = ops_to_decompose(program.graph_module, registry(opset))
    except Exception:  # a graph the rewrites did not foresee: each rewrite kept it equivalent so far
        log.debug("rewriting for the ONNX translation failed; torch.onnx decomposes", exc_info=True)
        needed = ["(the rewrite failed)"]
    if needed:
        log.debug("ONNX export decomposes %s first", ", ".join(needed))
        prepared = _core._prepare_exported_program_for_export(program, registry=registry(opset))
    else:
        _fx_passes.insert_type_promotion_nodes(program.graph_module)
        program._graph_module = _fx_passes.remove_assertion_nodes(program.graph_module)
        prepared = program
    onnx_program = _core._exported_program_to_onnx_program(prepared, registry=registry(opset))
    onnx_program.model = onnxscript_apis.convert_version(onnx_program.model, opset)
    onnx_program.optimize()
    return onnx_program.model


def _public_export(program, inputs: tuple, opset: int) -> "ir.Model":
    return torch.onnx.export(program, tuple(inputs), dynamo=True, opset_version=opset, optimize=True,
                             verbose=False).model


@functools.cache
def registry(opset: int):
    """torchlib's translations at ``opset``, built once (torch.onnx builds them at every export)."""
    from torch.onnx._internal.exporter import _registration

    return _registration.ONNXRegistry.from_torchlib(opset_version=opset)


def ops_to_decompose(gm: torch.fx.GraphModule, translations) -> list[str]:
    """Rewrite ``gm``'s graph (a fresh program's: nobody else holds it) as the module docstring
    says; the names of the ops left that only torch.onnx's decomposition can handle."""
    from torch.onnx._internal.exporter import _decomp

    translated = set(_decomp.get_onnx_implemented_overloads(translations))
    graph = gm.graph
    changed = False
    for node in list(graph.nodes):
        if node.op == "call_function":
            changed |= _rewrite(graph, node)
    if changed:
        graph.lint()
        gm.recompile()
    left = []
    for module in gm.modules():
        for node in module.graph.nodes if isinstance(module, torch.fx.GraphModule) else ():
            if node.op != "call_function":
                continue
            target = node.target
            if target not in translated or _writes_in_place(target):
                left.append(str(target))
    return sorted(set(left))


def _writes_in_place(target) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is not None and schema.is_mutable


def _rewrite(graph: torch.fx.Graph, node: torch.fx.Node) -> bool:
    target = node.target
    if target is aten._assert_tensor_metadata.default and not node.users:
        graph.erase_node(node)
        return True
    if target in _RENAMED:
        node.target = _RENAMED[target]
        return True
    if target in _TO:
        return _to_copy(node)
    if target is aten.adaptive_avg_pool2d.default:
        return _global_pool(node)
    if target is aten.diff.default:
        return _diff(graph, node)
    return _functional(node)


def _to_copy(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    fmt = node.kwargs.get("memory_format")
    if not isinstance(val, torch.Tensor) or fmt not in (None, torch.preserve_format):
        return False
    node.target = aten._to_copy.default
    node.args = (node.args[0],)
    node.kwargs = {"dtype": val.dtype}
    node.meta[_MAY_ALIAS] = True  # to() may have returned its input: a write to it is not fresh
    return True


def _global_pool(node: torch.fx.Node) -> bool:
    x, size = node.args[0], node.args[1]
    if list(size) != [1, 1]:
        return False
    node.target = aten.mean.dim
    node.args = (x, [-2, -1], True)
    return True


def _diff(graph: torch.fx.Graph, node: torch.fx.Node) -> bool:
    """diff(x, n=1, dim, prepend, append) = y[1:] - y[:-1] along dim, y = cat([prepend, x, append])."""
    args = dict(zip(("self", "n", "dim", "prepend", "append"), node.args)) | dict(node.kwargs)
    x, n, dim = args["self"], args.get("n", 1), args.get("dim", -1)
    val = node.meta.get("val")
    if n != 1 or not isinstance(val, torch.Tensor) or val.dtype == torch.bool or _is_returned(node):
        return False
    parts = [p for p in (args.get("prepend"), x, args.get("append")) if p is not None]
    with graph.inserting_before(node):
        whole = _call(graph, aten.cat.default, (parts, dim), node) if len(parts) > 1 else x
        later = _call(graph, aten.slice.Tensor, (whole, dim, 1, _END), node)
        earlier = _call(graph, aten.slice.Tensor, (whole, dim, 0, -1), node)
        result = _call(graph, aten.sub.Tensor, (later, earlier), node)
    node.replace_all_uses_with(result)
    graph.erase_node(node)
    return True


def _call(graph: torch.fx.Graph, target, args: tuple, replacing: torch.fx.Node) -> torch.fx.Node:
    """A new node, its ``meta["val"]`` computed on the fake values of its arguments (torch.onnx
    reads each value's shape and dtype from there), its other metadata (source line, module
    stack: the ONNX node's names and the report's source lines) those of the node it replaces."""
    node = graph.call_function(target, args)
    node.meta.update({k: v for k, v in replacing.meta.items() if k != "val"})
    fake_args = torch.fx.node.map_arg(args, lambda a: a.meta["val"])
    fake_mode = torch._guards.detect_fake_mode(torch.utils._pytree.tree_leaves(fake_args))
    with fake_mode:
        node.meta["val"] = target(*fake_args)
    return node


def _functional(node: torch.fx.Node) -> bool:
    """``y = op_(x, ...)`` as ``y = op(x, ...)``, ``x``'s later users reading ``y``, when ``x`` is a
    fresh value no other name can see."""
    target = node.target
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.is_mutable or not node.args:
        return False
    name = schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_"):
        return False
    functional = getattr(getattr(aten, name[:-1], None), target._overloadname, None)
    # Only the first argument may be written (out= variants and the rest are left alone).
    if functional is None or any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments[1:]):
        return False
    x = node.args[0]
    if not isinstance(x, torch.fx.Node) or not _fresh(x):
        return False
    if any(_aliases(user) for user in x.users if user is not node) or _is_returned(x):
        return False  # a view of x would see the write; the program's signature names x
    node.target = functional
    for user in list(x.users):
        if user > node:  # graph order
            user.replace_input_with(x, node)
    return True


def _fresh(x: torch.fx.Node) -> bool:
    """``x`` is made by an op that returns new memory (not an input, weight, or view)."""
    if x.op != "call_function":
        return False
    if x.target is operator.getitem:
        return _fresh_op(x.args[0]) if isinstance(x.args[0], torch.fx.Node) else False
    return _fresh_op(x)


def _is_returned(node: torch.fx.Node) -> bool:
    return any(user.op == "output" for user in node.users)


def _fresh_op(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return (node.op == "call_function" and schema is not None and not schema.is_mutable
            and not node.meta.get(_MAY_ALIAS)
            and all(r.alias_info is None for r in schema.returns))


def _aliases(node: torch.fx.Node) -> bool:
    """``node``'s output may share memory with an input (a view), or it writes one."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None:
        return node.op != "output" and node.target is not operator.getitem
    return schema.is_mutable or any(r.alias_info is not None for r in schema.returns)
