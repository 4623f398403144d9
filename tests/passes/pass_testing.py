"""Shared helpers for pass tests: load and capture samples, run one pass, count ops.

Each helper is a plain function (``from pass_testing import captured``); conftest.py also offers
it as a pytest fixture of the same name that returns the function (``def test_x(captured): ...``)::

    model, inputs = load_sample("cnn")                 # small variant, eval mode, seeded
    model, inputs, gm = captured("resnet50")           # a fresh copy of the cached capture
    new_gm, record, ctx = run_pass("fold_conv_bn", gm, inputs)   # through PassManager, verify on
    assert count_ops(new_gm, aten.batch_norm) == 0

    # symbolic shapes: the sample captured with Dim.AUTO sizes, then verified at other shapes
    model, inputs, gm = captured_dynamic("bert")       # captured at the example grown to >= 2
    input_sets = inputs_at_shapes("bert", gm, inputs)  # the example, then batch 1/3/8 x seq 1..64
    new_gm, record, ctx = run_pass_at_shapes("fuse_attention", gm, model, input_sets)
    assert not baked_sizes(gm, new_gm)

Captures are cached per (sample, small) for the test session; ``captured`` hands out a copy of
the graph each time (weights shared, never edited in place by passes), so tests cannot see each
other's rewrites.
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points
from pathlib import Path

import math
import warnings

import torch
import torch.fx
from torch.utils._pytree import tree_leaves

from accelc.capture import capture, graph_module_from_program
from accelc.pass_base import PassContext
from accelc.pass_manager import PassManager, PassRecord, copy_graph_module
from accelc.patterns import aten, is_op, is_static, tensor_meta
from accelc.verify import Verifier, tolerance_for_precision
from accelc.registry import GROUP

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"


def load_sample(name: str, small: bool = True) -> tuple[torch.nn.Module, tuple]:
    """``samples/<name>.py``'s (model, inputs), seeded; the small variant unless ``small=False``."""
    if str(SAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(SAMPLES_DIR))
    module = importlib.import_module(name)
    model = module.get_model(small=small)
    inputs = tuple(module.get_inputs(small=small))
    return model.eval(), inputs


@functools.lru_cache(maxsize=None)
def _cached_capture(name: str, small: bool):
    torch.manual_seed(0)
    model, inputs = load_sample(name, small)
    result = capture(model, inputs)
    if not result.ok:
        raise RuntimeError(f"sample {name!r} could not be captured: {result.failure}")
    return model, inputs, result.graph_module


def captured(name: str, small: bool = True) -> tuple[torch.nn.Module, tuple, torch.fx.GraphModule]:
    """(model, inputs, gm): the sample and a private copy of its captured graph."""
    model, inputs, gm = _cached_capture(name, small)
    return model, inputs, copy_graph_module(gm)


@functools.lru_cache(maxsize=None)
def _pass_class(pass_name: str):
    """The registered class for ``pass_name``; loads only that entry point, so one broken
    plugin elsewhere in the group does not fail every pass's tests."""
    for ep in entry_points(group=GROUP):
        if ep.name == pass_name:
            return ep.load()
    raise KeyError(
        f"pass {pass_name!r} is not registered; add it to pyproject.toml's accelc.passes "
        "entry points and reinstall accelc (pip install --no-deps -e .)"
    )


def run_pass(
    pass_name: str, gm: torch.fx.GraphModule, inputs: tuple, precision: str = "fp32"
) -> tuple[torch.fx.GraphModule, PassRecord, PassContext]:
    """Run the registered pass ``pass_name`` alone through PassManager with verification on."""
    ctx = PassContext(precision=precision, example_inputs=tuple(inputs))
    new_gm, records = PassManager([_pass_class(pass_name)()], verify=True).run(gm, ctx)
    return new_gm, records[0], ctx


def count_ops(gm: torch.fx.GraphModule, *targets) -> int:
    """How many calls to any of ``targets`` (OpOverloads or packets) the graph holds."""
    return sum(1 for node in gm.graph.nodes if is_op(node, *targets))


# --- symbolic (dynamic) shapes -------------------------------------------------------------------

# Sizes each sample is verified at besides its example: batch always; sequence up to the small
# configs' 64 positions (BERT max_position_embeddings, GPT-2 n_positions); images from a few
# pixels (the CNNs' stride-2 stages still leave a pixel) to twice the example. ViT's export pins
# H and W (its position embeddings fit 64x64 only), so only its batch varies.
BATCHES = (1, 3, 8)
AXIS_SIZES = {
    "bert": {"seq": (1, 33, 64)},
    "gpt2": {"seq": (1, 33, 64)},
    "cnn": {"image": (8, 21, 48)},
    "multibranch_cnn": {"image": (8, 21, 48)},
    "resnet50": {"image": (8, 37, 96)},
}
OTHER_SIZES = {"seq": (1, 7, 19), "image": (8, 11, 19)}  # a test's own small model


def dynamic_spec(inputs: tuple) -> tuple:
    """``Dim.AUTO`` on dim 0 of every tensor input, dim 1 of integer rank-2 inputs (token ids,
    masks) and dims 2, 3 of floating rank-4 inputs (images); torch.export pins what the model pins."""
    auto = torch.export.Dim.AUTO
    spec = []
    for x in inputs:
        dims = {}
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            dims[0] = auto
            if x.dim() == 2 and not x.is_floating_point():
                dims[1] = auto
            if x.dim() == 4 and x.is_floating_point():
                dims.update({2: auto, 3: auto})
        spec.append(dims or None)
    return tuple(spec)


def grow_inputs(inputs: tuple, spec: tuple) -> tuple:
    """Each dynamic dim of size 1 doubled (``torch.cat([x, x], d)``): export specialises 0 and 1."""
    out = []
    for x, dims in zip(inputs, spec):
        for d in dims or ():
            if x.shape[d] < 2:
                x = torch.cat([x, x], dim=d)
        out.append(x)
    return tuple(out)


def capture_dynamic(model: torch.nn.Module, inputs: tuple) -> tuple[tuple, torch.fx.GraphModule]:
    """(inputs, gm): ``model`` exported the way accelc captures by default, with ``Dim.AUTO`` on
    :func:`dynamic_spec`'s dims of the inputs grown by :func:`grow_inputs`, then unlifted. The
    inputs come back as given: accelc hands passes the user's example (``ctx.example_inputs``),
    not the grown one."""
    spec = dynamic_spec(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, grow_inputs(inputs, spec), dynamic_shapes=spec, strict=False)
    return tuple(inputs), graph_module_from_program(program)


@functools.lru_cache(maxsize=None)
def _cached_dynamic_capture(name: str):
    torch.manual_seed(0)
    model, inputs = load_sample(name)
    inputs, gm = capture_dynamic(model, inputs)
    return model, inputs, gm


def captured_dynamic(name: str) -> tuple[torch.nn.Module, tuple, torch.fx.GraphModule]:
    """(model, example inputs, gm): the small sample captured with symbolic sizes (its example
    grown to >= 2 for the capture), with a private copy of the graph; its FakeTensor vals and
    their ShapeEnv are shared with the cache."""
    model, inputs, gm = _cached_dynamic_capture(name)
    return model, inputs, copy_graph_module(gm)


def _axis(x: torch.Tensor, dim: int) -> str:
    if dim == 0:
        return "batch"
    return "seq" if x.dim() == 2 else "image"


def _resized(x: torch.Tensor, sizes: dict[int, int], gen: torch.Generator) -> torch.Tensor:
    """``x`` at new sizes on some dims: floats drawn afresh around the example's mean and spread,
    token ids (integers with more than two values) drawn in the example's range, masks and type ids
    tiled from the example (so a mask keeps attending somewhere in every row)."""
    for d, n in sizes.items():
        reps = [1] * x.dim()
        reps[d] = math.ceil(n / x.shape[d])
        x = x.repeat(*reps).narrow(d, 0, n)
    if x.is_floating_point():
        std = float(x.std()) if x.numel() > 1 else 1.0
        return torch.randn(x.shape, generator=gen, dtype=x.dtype) * std + float(x.mean())
    if x.dtype != torch.bool and x.unique().numel() > 2:
        return torch.randint(int(x.min()), int(x.max()) + 1, x.shape, generator=gen, dtype=x.dtype)
    return x.contiguous()


def inputs_at_shapes(name: str, gm: torch.fx.GraphModule, inputs: tuple, batches=BATCHES) -> list[tuple]:
    """The example, then input sets at other sizes of every dim the graph ``gm`` keeps symbolic:
    batch x (smallest, middle, largest) of the sample's sequence or image sizes, five combinations
    (``name`` not a sample: a test's own model, sized by ``OTHER_SIZES``)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    dynamic = []  # per input: {dim: axis} for the dims the graph has symbolic
    for x, node in zip(inputs, placeholders):
        meta = tensor_meta(node)
        dims = {} if meta is None else {d: _axis(x, d) for d, s in enumerate(meta.shape) if not is_static(s)}
        dynamic.append(dims)
    axes = {axis for dims in dynamic for axis in dims.values()}
    other = next((sizes for axis, sizes in AXIS_SIZES.get(name, OTHER_SIZES).items() if axis in axes), None)
    if other is None:
        combos = [(b, None) for b in batches]
    else:
        lo, mid, hi = other
        combos = [(batches[0], lo), (batches[1], mid), (batches[2], hi), (batches[0], hi), (batches[2], lo)]
    gen = torch.Generator().manual_seed(11)
    sets = [tuple(inputs)]
    for batch, size in combos:
        new = []
        for x, dims in zip(inputs, dynamic):
            sizes = {d: (batch if axis == "batch" else size) for d, axis in dims.items()}
            new.append(_resized(x, {d: n for d, n in sizes.items() if n is not None}, gen) if sizes else x)
        sets.append(tuple(new))
    return sets


def shape_env(gm: torch.fx.GraphModule):
    """The ShapeEnv behind ``gm``'s symbolic sizes (None for a static graph)."""
    for node in gm.graph.nodes:
        for value in tree_leaves(node.meta.get("val")):
            for size in getattr(value, "shape", ()):
                if isinstance(size, torch.SymInt):
                    return size.node.shape_env
    return None


def run_pass_at_shapes(
    pass_name: str, gm: torch.fx.GraphModule, model: torch.nn.Module, input_sets: list[tuple], precision: str = "fp32"
) -> tuple[torch.fx.GraphModule, PassRecord, PassContext]:
    """Run ``pass_name`` alone through PassManager, verified against eager ``model`` on every input
    set (the first is the example). Fails when the pass installed a guard on the graph's ShapeEnv:
    a pass that compared SymInts with ``==`` decided on the example's sizes."""
    ctx = PassContext(precision=precision, example_inputs=tuple(input_sets[0]))
    with torch.inference_mode():
        references = [model(*x) for x in input_sets]
    verifier = Verifier(input_sets, references)
    verifier.tolerance_of = tolerance_for_precision(precision)  # as accelerate() judges a lowered graph
    env = shape_env(gm)
    guards = len(env.guards) if env is not None else 0
    new_gm, records = PassManager([_pass_class(pass_name)()], verify=True).run(gm, ctx, verifier)
    if env is not None and len(env.guards) != guards:
        added = [str(g.expr) for g in env.guards[guards:]]
        raise AssertionError(f"{pass_name} installed guards on symbolic sizes: {added}")
    return new_gm, records[0], ctx


def fresh_size(gm: torch.fx.GraphModule, hint: int, name: str) -> torch.SymInt:
    """A new symbolic size in ``gm``'s ShapeEnv whose hint is ``hint``: equal to another size's
    example value but not to that size, which is what a pass must not confuse."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic

    env = shape_env(gm)
    symbol = env.create_symbol(hint, ConstantSource(name), dynamic_dim=DimDynamic.DYNAMIC)
    return env.create_symintnode(symbol, hint=hint)


_SHAPE_ARGS = (aten.view, aten.reshape, aten._unsafe_view, aten.expand, aten.new_zeros, aten.new_ones, aten.new_empty,
               aten.new_full, aten.zeros, aten.ones, aten.empty, aten.full)


def baked_sizes(before: torch.fx.GraphModule, after: torch.fx.GraphModule) -> list[str]:
    """What in ``after`` pins a size that ``before`` kept symbolic: a literal in the shape argument
    of a view/reshape/expand/factory where its output is symbolic (or unrecorded), or a graph
    output that lost a symbolic size. (A folded constant or a prepacked weight that only fits the
    example shows up in the numbers: verify at other shapes with :func:`run_pass_at_shapes`.)"""
    problems = []
    for node in after.graph.nodes:
        if not is_op(node, *_SHAPE_ARGS):
            continue
        shape = node.args[1] if is_op(node, aten.view, aten.reshape, aten._unsafe_view, aten.expand) or \
            node.target.__name__.startswith("new_") else node.args[0]
        meta = tensor_meta(node)
        if meta is None:
            problems.append(f"{node.name} ({node.target}) has no recorded shape")
            continue
        if len(shape) != meta.dim():
            continue
        for d, (arg, size) in enumerate(zip(shape, meta.shape)):
            if isinstance(arg, int) and arg != -1 and not is_static(size):
                problems.append(f"{node.name}: size {arg} at dim {d} where the output is {size}")

    def output_shapes(gm):
        output = next(n for n in gm.graph.nodes if n.op == "output")
        return [tuple(tensor_meta(a).shape) if tensor_meta(a) is not None else None for a in tree_leaves(output.args)]

    for i, (was, now) in enumerate(zip(output_shapes(before), output_shapes(after))):
        if was is not None and now is not None and [is_static(d) for d in was] != [is_static(d) for d in now]:
            problems.append(f"output {i}: shape {now}, was {was}")
    return problems
