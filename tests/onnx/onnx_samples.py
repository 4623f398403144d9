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
    """The sample's static export (no dynamic_shapes: every size pinned)."""
    from accelc.onnx.export import export_graph

    model, inputs, gm = captured(name)
    return export_graph(gm, inputs, f"{tmp_root}/{name}_export")


# --- dynamic shapes: what accelc captures by default ----------------------------------------

# The dim_params each sample's ONNX inputs carry when exported with dynamic_spec.
DYNAMIC_AXES = {
    "mlp": ["batch"], "cnn": ["batch", "height", "width"], "vit": ["batch"],  # ViT's patch grid pins H and W
    "bert": ["batch", "seq"], "gpt2": ["batch", "seq"],
}
# Points to check at: (batch, seq) for the token models, (batch, side) for the CNN, batch elsewhere.
# The small BERT/GPT-2 have 64 positions; the small CNN's example is 32x32.
POINTS = {
    "bert": [(1, 16), (3, 7), (8, 64), (2, 1)], "gpt2": [(1, 16), (3, 7), (8, 64), (2, 1)],
    "cnn": [(1, 32), (3, 16), (2, 48)], "vit": [(1,), (3,), (8,)], "mlp": [(1,), (3,), (8,)],
}


def dynamic_spec(name: str, inputs: tuple, seq: bool = True):
    """torch.export's dynamic_shapes for a sample, as accelc's capture builds it: batch on every
    input, seq on token inputs (unless ``seq=False``), height/width on the CNN's image."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    if name in ("bert", "gpt2"):
        axes = {0: batch, 1: Dim("seq", min=1, max=64)} if seq else {0: batch}
        return tuple(dict(axes) for _ in inputs)
    if name == "cnn":
        return ({0: batch, 2: Dim("height", min=8, max=256), 3: Dim("width", min=8, max=256)},)
    return tuple({0: batch} for _ in inputs)


def captured_dynamic(name: str, seq: bool = True):
    """(model, example inputs, dynamic_shapes, graph module) with the sample's dynamic sizes symbolic."""
    return _captured_dynamic(name, seq)  # one cache key however it is called


def exported_dynamic(name: str, tmp_root: str, seq: bool = True):
    """The sample's export with its dynamic sizes (cached per sample)."""
    return _exported_dynamic(name, tmp_root, seq)


@functools.lru_cache(maxsize=None)
def _captured_dynamic(name: str, seq: bool):
    import warnings

    from accelc.capture import graph_module_from_program
    from accelc.onnx.export import grow_inputs

    torch.manual_seed(0)
    model, inputs = load_sample(name)
    spec = dynamic_spec(name, inputs, seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, grow_inputs(inputs, spec), dynamic_shapes=spec, strict=False)
    return model, inputs, spec, graph_module_from_program(program)


@functools.lru_cache(maxsize=None)
def _exported_dynamic(name: str, tmp_root: str, seq: bool):
    from accelc.onnx.export import export_graph

    _, inputs, spec, gm = captured_dynamic(name, seq)
    return export_graph(gm, inputs, f"{tmp_root}/{name}_dynamic_export{'' if seq else '_batch'}", dynamic_shapes=spec)


def inputs_at(name: str, point: tuple, seed: int = 0) -> tuple:
    """Seeded inputs for a sample at ``point`` (see POINTS); BERT's mask pads the last quarter."""
    gen = torch.Generator().manual_seed(seed)
    batch = point[0]
    if name in ("bert", "gpt2"):
        seq = point[1]
        ids = torch.randint(0, 1000, (batch, seq), generator=gen)
        if name == "gpt2":
            return (ids,)
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[:, seq - seq // 4:] = 0
        return ids, mask, torch.zeros(batch, seq, dtype=torch.int64)
    if name == "cnn":
        return (torch.randn(batch, 3, point[1], point[1], generator=gen),)
    _, example = load_sample(name)
    return (torch.randn(batch, *example[0].shape[1:], generator=gen),)


def eager_outputs(name: str, inputs: tuple) -> list:
    from accelc.verify import flat_outputs

    model = captured_dynamic(name)[0]
    with torch.inference_mode():
        return flat_outputs(model(*inputs))


# --- building runtimes ---------------------------------------------------------------------


def onnx_passes(device_type: str = "cpu", names: list[str] | None = None) -> list:
    """Instances of the onnx stage's passes: ``names``, or the stage's default list for the device."""
    from accelc.registry import Registry
    from accelc.stages import STAGES

    registry = Registry.discover()
    return [registry.create("onnx", n) for n in (STAGES["onnx"].default_names(device_type) if names is None else names)]


def reference_cases(module, input_sets: list[tuple]) -> list[tuple[tuple, list]]:
    """(inputs, flat outputs of ``module``) for each input set: the references build_onnx_runtime checks against."""
    from accelc.verify import flat_outputs

    with torch.inference_mode():
        return [(inputs, flat_outputs(module(*inputs))) for inputs in input_sets]


def build(gm, inputs, device="cpu", precision="fp32", *, passes=None, ctx=None, probe_inputs=None, **kwargs):
    """build_onnx_runtime as the API calls it: a fresh context (or ``ctx``), the onnx stage's
    default passes for the device (or ``passes``), and, with ``probe_inputs``, the graph's
    answers on the example and on each of them as the cases."""
    from accelc.onnx.build import build_onnx_runtime
    from accelc.pass_base import PassContext

    ctx = ctx or PassContext(device=device, precision=precision, example_inputs=inputs)
    passes = onnx_passes(torch.device(device).type) if passes is None else passes
    if probe_inputs is not None:
        kwargs["cases"] = reference_cases(gm, [inputs, *probe_inputs])
    return build_onnx_runtime(gm, inputs, device, ctx, passes, **kwargs)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
