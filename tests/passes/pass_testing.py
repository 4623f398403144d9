"""Shared helpers for pass tests: load and capture samples, run one pass, count ops.

Each helper is a plain function (``from pass_testing import captured``); conftest.py also offers
it as a pytest fixture of the same name that returns the function (``def test_x(captured): ...``)::

    model, inputs = load_sample("cnn")                 # small variant, eval mode, seeded
    model, inputs, gm = captured("resnet50")           # a fresh copy of the cached capture
    new_gm, record, ctx = run_pass("fold_conv_bn", gm, inputs)   # through PassManager, verify on
    assert count_ops(new_gm, aten.batch_norm) == 0

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

import torch
import torch.fx

from accelc.capture import capture
from accelc.pass_base import PassContext
from accelc.pass_manager import PassManager, PassRecord, copy_graph_module
from accelc.patterns import is_op
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
