"""Run the graph in fp16/bf16 (``--precision``), keeping numerically sensitive ops in fp32.

    op(x₁, …, W, …)   ==>  op(cast(x₁, low), …, W_low, …)                 (every other float op)
    sens(x, γ, …)     ==>  sens(cast(x, fp32), γ, …)                      (softmax, norms, reductions,
                                                                           exp/log, pow: kept fp32)
    cast(cast(x, fp32), low)  ==>  x          when x is already low (a lossless round trip)
    output y          ==>  cast(y, y's original dtype)

Weights become low-precision copies (made once, shared by every user); activations are cast where
an op needs another dtype than it receives, one cast per (value, dtype). Graph inputs and outputs
keep their dtypes. Sensitive ops accumulate over many elements or amplify relative error (a sum
of 768 bf16 terms loses ~3 digits; exp turns an absolute error into a relative one), so they read
fp32 and their consumers cast the result down again.

Error budget: the pass runs the fp32 and the lowered graph on the example inputs and records each
output's max error (``gm.meta["accelc"]["lower_precision"]``). When an output exceeds the
tolerance of the lowered dtype (:func:`accelc.patterns.tolerance`), it bisects over the model's
layers in graph order for the first layer whose lowering breaks the tolerance, keeps that layer in
fp32 (refusal: which layer, which output, what error) and tries again, a few layers at most.
At ``fp32`` the pass does nothing.
"""

from __future__ import annotations

import copy
import logging
import re

import torch
import torch.fx
from torch.utils._pytree import tree_leaves, tree_map

from accelc import Pass, PassContext, PassResult
from accelc.patterns import (META_KEY, accelc_meta, add_constant, aten, compare_outputs, get_constant, infer_meta, is_op,
                             tensor_meta, tolerance, verification_inputs)

log = logging.getLogger(__name__)

SENSITIVE = (
    aten.softmax, aten._softmax, aten._safe_softmax, aten.log_softmax, aten._log_softmax,
    aten.layer_norm, aten.native_layer_norm, aten.batch_norm, aten._native_batch_norm_legit_no_training,
    aten.group_norm, aten.native_group_norm, aten.instance_norm, aten.rms_norm,
    aten.sum, aten.mean, aten.var, aten.std, aten.var_mean, aten.std_mean, aten.cumsum, aten.prod,
    aten.logsumexp, aten.norm, aten.linalg_vector_norm,
    aten.exp, aten.log, aten.log1p, aten.expm1, aten.log2, aten.pow,
)
_CASTS = (aten.to, aten._to_copy)
_ASSERTS = (aten._assert_tensor_metadata,)
_MAX_KEPT_LAYERS = 4


def _dtype(node) -> torch.dtype | None:
    val = tensor_meta(node)
    return val.dtype if val is not None else None


def layer_of(node: torch.fx.Node) -> str:
    """The layer a node belongs to: its module path up to the first block index (``encoder.layer.3``).

    ``""`` for ops of the top-level module itself.
    """
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    match = re.match(r"^(.*?\.\d+)(\.|$)", path)
    return match.group(1) if match else path


class _Lowering:
    """One lowering of ``gm`` in place: ``keep`` names layers that stay entirely in fp32."""

    def __init__(self, gm: torch.fx.GraphModule, low: torch.dtype, keep: set[str]):
        self.gm, self.low, self.keep = gm, low, keep
        self.casts: dict[tuple[torch.fx.Node, torch.dtype], torch.fx.Node] = {}
        self.constants: dict[tuple[str, torch.dtype], torch.fx.Node] = {}
        self.inserted = 0  # casts of activations
        self.changes = 0  # every edit, constants and removed assertions included

    def run(self) -> int:
        graph = self.gm.graph
        for node in list(graph.nodes):
            if is_op(node, *_ASSERTS):
                continue
            elif node.op == "call_function" and not is_op(node, *_CASTS):
                want = torch.float32 if is_op(node, *SENSITIVE) or layer_of(node) in self.keep else self.low
                node.args = tree_map(lambda a: self._as(a, want, node), node.args)
                node.kwargs = tree_map(lambda a: self._as(a, want, node), node.kwargs)
                try:
                    infer_meta(node)
                except Exception:  # an op fake tensors cannot run: its old metadata stays
                    log.debug("could not refresh metadata of %s", node.name, exc_info=True)
            elif node.op == "output":
                self._restore_outputs(node)
        self._cancel_round_trips()
        for node in list(graph.nodes):  # dtype assertions from capture that no longer hold
            if is_op(node, *_ASSERTS) and node.kwargs.get("dtype") not in (None, _dtype(node.args[0])):
                graph.erase_node(node)
                self.changes += 1
        return self.inserted

    def _as(self, arg, want: torch.dtype, user: torch.fx.Node):
        """``arg`` in dtype ``want`` when it is a float tensor of another float dtype."""
        dtype = _dtype(arg)
        if dtype is None or not dtype.is_floating_point or dtype == want or dtype == torch.float64:
            return arg
        constant = get_constant(self.gm, arg)
        if constant is not None:
            key = (arg.target, want)
            if key not in self.constants:
                self.constants[key] = add_constant(self.gm, constant.to(want), f"{arg.target}_{str(want)[6:]}", before=arg)
            self.changes += 1
            return self.constants[key]
        key = (arg, want)
        if key not in self.casts:
            with self.gm.graph.inserting_after(arg):
                cast = self.gm.graph.call_function(aten._to_copy.default, (arg,), {"dtype": want})
            infer_meta(cast)
            self.casts[key] = cast
            self.inserted += 1
        self.changes += 1
        return self.casts[key]

    def _restore_outputs(self, output: torch.fx.Node) -> None:
        original = accelc_meta(output).get("output_dtypes")

        def restore(arg, dtype):
            if not isinstance(arg, torch.fx.Node) or dtype is None or _dtype(arg) in (None, dtype):
                return arg
            with self.gm.graph.inserting_before(output):
                cast = self.gm.graph.call_function(aten._to_copy.default, (arg,), {"dtype": dtype})
            infer_meta(cast)
            self.changes += 1
            return cast

        leaves = tree_leaves(output.args)
        dtypes = iter(original or [None] * len(leaves))
        output.args = tree_map(lambda a: restore(a, next(dtypes)), output.args)

    def _cancel_round_trips(self) -> None:
        """cast(cast(x, wide), narrow) ==> x when x is already ``narrow`` and the inner cast widens."""
        graph = self.gm.graph
        for node in list(graph.nodes):
            if not is_op(node, *_CASTS) or node.graph is not graph:
                continue
            inner = node.args[0]
            if not is_op(inner, *_CASTS) or not isinstance(inner.args[0], torch.fx.Node):
                continue
            source, mid, out = _dtype(inner.args[0]), _dtype(inner), _dtype(node)
            if None in (source, mid, out) or source != out or not _widens(source, mid):
                continue
            node.replace_all_uses_with(inner.args[0])
            graph.erase_node(node)
            if not inner.users:
                graph.erase_node(inner)


def _widens(narrow: torch.dtype, wide: torch.dtype) -> bool:
    return narrow in (torch.float16, torch.bfloat16) and wide in (torch.float32, torch.float64) or narrow == wide


def _copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    new = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
    new.meta = dict(getattr(gm, "meta", {}))
    return new


class LowerPrecision(Pass):
    """Run weights and activations in fp16/bf16, keeping numerically sensitive ops in fp32."""

    name = "lower_precision"

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        if ctx.precision == "fp32":
            return PassResult(modified=False)
        low = ctx.compute_dtype
        output = next(n for n in gm.graph.nodes if n.op == "output")
        accelc_meta(output)["output_dtypes"] = [_dtype(a) for a in tree_leaves(output.args)]
        keep: set[str] = set()
        errors = None
        if ctx.example_inputs:
            # The inputs the pass manager verifies on: the example and two seeded variants.
            input_sets = verification_inputs(ctx.example_inputs, count=2, seed=0)
            reference = [_run(gm, x) for x in input_sets]
            keep, errors = self._choose_fp32_layers(gm, ctx, low, input_sets, reference)
        lowering = _Lowering(gm, low, keep)
        casts = lowering.run()
        gm.meta.setdefault(META_KEY, {})[self.name] = {"dtype": str(low), "fp32_layers": sorted(keep), "outputs": errors}
        kept = sum(1 for n in gm.graph.nodes if n.op == "call_function" and layer_of(n) in keep)
        return PassResult(modified=lowering.changes > 0, stats={"casts": casts, "fp32_layers": len(keep), "fp32_nodes": kept})

    def _choose_fp32_layers(self, gm, ctx: PassContext, low, input_sets, reference):
        # "" is the top-level module's own ops (slicing, residual adds written in forward).
        layers = list(dict.fromkeys(layer_of(n) for n in gm.graph.nodes if n.op == "call_function"))

        def lowered_errors(keep: set[str]):
            trial = _copy(gm)
            _Lowering(trial, low, keep).run()
            trial.recompile()
            per_set = [_per_output(_run(trial, x), ref, low) for x, ref in zip(input_sets, reference)]
            return [max(errs, key=lambda e: (not e["ok"], e["max_abs_error"])) for errs in zip(*per_set)]

        keep: set[str] = set()
        errors = lowered_errors(keep)
        while not all(e["ok"] for e in errors) and len(keep) < _MAX_KEPT_LAYERS:
            candidates = [layer for layer in layers if layer not in keep]
            lo, hi = 0, len(candidates)  # lowering candidates[:hi] fails; candidates[:lo] passes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                only = set(candidates[mid:]) | keep
                if all(e["ok"] for e in lowered_errors(only)):
                    lo = mid
                else:
                    hi = mid
            if hi == 0:
                break
            culprit = candidates[hi - 1]
            worst = max((e for e in errors if not e["ok"]), key=lambda e: e["max_abs_error"])
            node = next(n for n in gm.graph.nodes if n.op == "call_function" and layer_of(n) == culprit)
            ctx.refuse(node, f"kept layer {culprit or '(top level)'} in fp32: lowering it put output {worst['index']} "
                             f"{worst['max_abs_error']:.3g} off fp32, beyond the {str(low)[6:]} tolerance")
            keep.add(culprit)
            errors = lowered_errors(keep)
        for e in errors:
            log.info("%s: output %d max abs error %.3g vs fp32 (%s)", self.name, e["index"], e["max_abs_error"],
                     "ok" if e["ok"] else "beyond tolerance")
        return keep, errors


def _run(gm, inputs):
    with torch.inference_mode():
        return gm(*inputs)


def _per_output(actual, expected, low: torch.dtype) -> list[dict]:
    """Each output's max error against fp32 and whether it is within the lowered dtype's tolerance."""
    of = lambda d: tolerance(low) if d.is_floating_point else tolerance(d)  # noqa: E731
    result = []
    for index, (a, b) in enumerate(zip(tree_leaves(actual), tree_leaves(expected))):
        if not isinstance(b, torch.Tensor):
            continue
        cmp = compare_outputs([a], [b], of)
        result.append({"index": index, "max_abs_error": cmp.max_abs_error, "max_rel_error": cmp.max_rel_error, "ok": cmp.ok})
    return result
