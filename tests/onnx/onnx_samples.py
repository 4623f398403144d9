"""Helpers for the ONNX tests: seeded small samples, their captured graphs and ONNX exports (cached).

A module of its own name (not conftest) so that ``from onnx_samples import ...`` cannot pick up
another test folder's conftest.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import onnx
import torch

from accelc.capture import capture

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"


def load_sample(name: str):
    if str(SAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(SAMPLES_DIR))
    module = importlib.import_module(name)
    return module.get_model(small=True).eval(), tuple(module.get_inputs(small=True))


@functools.lru_cache(maxsize=None)
def captured(name: str):
    torch.manual_seed(0)
    model, inputs = load_sample(name)
    result = capture(model, inputs)
    if not result.ok:
        raise RuntimeError(f"sample {name!r} could not be captured: {result.failure}")
    return model, inputs, result.graph_module


@functools.lru_cache(maxsize=None)
def exported(name: str, tmp_root: str):
    from accelc.onnx.export import export_graph

    model, inputs, gm = captured(name)
    return export_graph(gm, inputs, f"{tmp_root}/{name}_export", static=True)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
