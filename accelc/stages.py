"""The one pipeline: its stages, each an explicit, ordered list of pass names.

    captured graph ─► graph ─► lowering ─► (PyTorch runtime)
                          └──► export ─► onnx ─► (ONNX Runtime)

- ``graph``: portable fx passes; their output is what ``model.pt2`` and the ONNX export hold.
- ``lowering``: fx passes that pay off only in the PyTorch runtime, per device (below).
  They are never saved; loading an artifact replays the recorded list.
- ``onnx``: passes over the exported ONNX model, per provider.

Order matters and is decided here, in one place, not by priorities or import order. A plugin
joins a stage's default list by declaring ``stage`` and ``after``/``before`` on its class;
otherwise it runs only where ``--passes`` names it. A name may be qualified with its stage
(``onnx:fuse_attention``); a bare name means every stage that has a pass of that name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import PassRegistryError
from .registry import Registry

log = logging.getLogger(__name__)

GRAPH, LOWERING, ONNX = "graph", "lowering", "onnx"
PRECISION_PASS = "lower_precision"  # the graph stage's pass that lowers precision; what follows it cleans up


@dataclass(frozen=True)
class Stage:
    name: str
    ir: str  # the registry group its passes come from: "fx" | "onnx"
    defaults: dict[str, tuple[str, ...]]  # device type ("cpu", "cuda") -> pass names, in order
    why: str

    def default_names(self, device_type: str) -> list[str]:
        return list(self.defaults.get(device_type, self.defaults.get("cpu", ())))


_GRAPH_PASSES = (
    "remove_noops",
    "fold_constants",  # after noops: masks/position ids become constants before pattern passes
    "fold_conv_bn",
    "fold_linear_bn",
    "fuse_attention",
    "cancel_transposes",  # after attention matching, which reads the transposes/views as written
    "merge_views",
    "lower_precision",  # last before CSE/DCE, which clean up its casts; a no-op at fp32
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
)

# Lowerings for the PyTorch runtime, after the graph passes and never saved, because they pay
# off only there:
# - to_channels_last (first: the conv lowerings read its layout): memory format is a PyTorch
#   notion; in the graph handed to the ONNX exporter it turns a dynamic-batch flatten into an
#   as_strided index computation (ten extra nodes, 5% of a small CNN's latency in ORT);
# - fuse_conv_pointwise, pack_linear_weights: oneDNN/MKL prepacked weights are opaque tensors
#   that cannot be serialised;
# - merge_parallel_linears: one GEMM for Q/K/V helps PyTorch, but ONNX Runtime packs Q/K/V into
#   its Attention op itself and measured ~6% slower on BERT when handed a pre-merged GEMM + Split;
# - bind_direct_calls (last: later passes match OpOverloads): the bindings it calls are not ATen
#   graph targets that torch.export can serialise.
_LOWERING_PASSES = {
    "cpu": ("to_channels_last", "merge_parallel_linears", "fuse_conv_pointwise", "pack_linear_weights", "bind_direct_calls"),
    "cuda": ("to_channels_last", "merge_parallel_linears", "bind_direct_calls"),
}

# Order matters: attention first (it needs the exporter's own MatMul/Add layout around the
# softmax, and takes the Q/K/V biases into MultiHeadAttention before fold_bias_add sees them);
# int8 quantisation (convolutions, calibrated, then MatMul/Gemm per call) before fold_bias_add,
# so the quantiser sees each 3-D linear as MatMul (+ Add) rather than a Gemm between two Reshapes; bias + GELU before SkipLayerNormalization, whose
# contrib outputs ONNX shape inference cannot type, leaving the bias rule without the shapes it
# checks; precision, then cleanup, last.
#
# The lists differ because ORT's kernels do: on the CPU provider the packed Attention,
# SkipLayerNormalization and BiasGelu kernels each measured slower than what they replace
# (BERT-base, seq 512, 2 threads: 1.21x over a plain export without them, 1.07x with them), so
# the CPU list keeps GEMMs whole, bias inside Gemm, and LayerNormalization unfused.
_ONNX_PASSES = {
    "cpu": ("fuse_attention", "split_causal_attention", "drop_padded_keys", "quantize_conv_int8", "quantize_int8",
            "fold_bias_add", "fuse_fast_gelu", "convert_fp16", "cleanup_casts_reshapes"),
    "cuda": ("fuse_attention", "pack_qkv_attention", "fuse_fast_gelu", "fuse_bias_gelu", "fuse_skip_layer_norm",
             "fold_bias_add", "convert_fp16", "cleanup_casts_reshapes"),
}

STAGES: dict[str, Stage] = {
    GRAPH: Stage(GRAPH, "fx", {"cpu": _GRAPH_PASSES}, "portable graph passes (saved in model.pt2 and the export)"),
    LOWERING: Stage(LOWERING, "fx", _LOWERING_PASSES, "PyTorch runtime lowerings (redone at every load)"),
    ONNX: Stage(ONNX, "onnx", _ONNX_PASSES, "passes over the exported ONNX model"),
}

DEFAULT_PIPELINE: list[str] = list(_GRAPH_PASSES)


@dataclass
class Pipeline:
    """The pass names each stage will run, and what building it noticed (a plugin left out)."""

    stages: dict[str, list[str]]
    notes: list[str]

    def names(self, stage: str) -> list[str]:
        return list(self.stages.get(stage, []))

    def as_dict(self) -> dict:
        return {"stages": {k: list(v) for k, v in self.stages.items()}, "notes": list(self.notes)}


def split_name(name: str) -> tuple[str | None, str]:
    """``"onnx:fuse_attention"`` -> ("onnx", "fuse_attention"); a bare name -> (None, name)."""
    stage, sep, bare = name.partition(":")
    if not sep:
        return None, name
    if stage not in STAGES:
        raise PassRegistryError(f"unknown stage {stage!r} in {name!r}; stages are {', '.join(STAGES)}")
    return stage, bare


def stages_of(registry: Registry, name: str) -> list[str]:
    """The stages a (possibly qualified) name belongs to; an unknown name is an error."""
    stage, bare = split_name(name)
    candidates = [stage] if stage else list(STAGES)
    found = []
    for s in candidates:
        ir = STAGES[s].ir
        if not registry.has(ir, bare):
            continue
        if ir == "fx" and stage is None:
            # One fx pass belongs to one fx stage: lowering if it is one of the lowerings (on any
            # device), else graph.
            lowering = any(bare in names for names in _LOWERING_PASSES.values())
            if (s == LOWERING) != lowering:
                continue
        found.append(s)
    if not found:
        known = ", ".join(sorted({f"{n}" for ir in ("fx", "onnx") for n in registry.names(ir)}))
        where = f" in stage {stage!r}" if stage else ""
        raise PassRegistryError(f"unknown pass {name!r}{where}; known passes: {known} (`accelc passes` lists them)")
    return found


def build_pipeline(registry: Registry, device_type: str = "cpu", passes: list[str] | None = None,
                   disable: list[str] | None = None) -> Pipeline:
    """Every stage's pass list for ``device_type``.

    ``passes`` replaces the default list of each stage it names (stages it does not name keep
    theirs); a bare name that two stages have is ambiguous there and must be qualified.
    ``disable`` removes names (bare: from every stage that has the name). Unknown names are errors.
    """
    notes: list[str] = []
    stages = {name: stage.default_names(device_type) for name, stage in STAGES.items()}
    for stage_name in STAGES:
        stages[stage_name] = _with_plugins(registry, stage_name, stages[stage_name], notes)
    if passes:
        chosen: dict[str, list[str]] = {}
        for name in passes:
            found = stages_of(registry, name)
            if len(found) > 1:
                raise PassRegistryError(f"pass {name!r} is in stages {' and '.join(found)}; write "
                                        f"{' or '.join(f'{s}:{split_name(name)[1]}' for s in found)}")
            chosen.setdefault(found[0], []).append(split_name(name)[1])
        stages.update(chosen)
    for name in disable or ():
        bare = split_name(name)[1]
        for stage_name in stages_of(registry, name):
            stages[stage_name] = [n for n in stages[stage_name] if n != bare]
    return Pipeline(stages, notes)


def _with_plugins(registry: Registry, stage_name: str, names: list[str], notes: list[str]) -> list[str]:
    """``names`` with the third-party passes that declare a place in this stage inserted there.

    Declaring a place needs the class, so third-party plugins of the stage's IR are imported
    here; one that fails to import is left out with a note rather than stopping the build."""
    stage = STAGES[stage_name]
    names = list(names)
    for entry in (registry.entry(stage.ir, n) for n in registry.names(stage.ir)):
        if entry.builtin or entry.name in names:
            continue
        try:
            cls = registry.load(stage.ir, entry.name)
        except PassRegistryError as exc:
            if stage_name != LOWERING:  # one note per plugin, not one per fx stage
                notes.append(f"{exc}; left out of the default pipeline")
                log.warning("accelc: %s", notes[-1])
            continue
        declared = cls.stage or ("onnx" if cls.ir == "onnx" else GRAPH)
        if declared != stage_name or not (cls.after or cls.before):
            continue
        anchor = cls.after or cls.before
        if anchor in names:
            names.insert(names.index(anchor) + (1 if cls.after else 0), entry.name)
        else:
            names.append(entry.name)
            notes.append(f"plugin pass {entry.name!r} asks to run {'after' if cls.after else 'before'} {anchor!r}, "
                         f"which is not in the {stage_name} stage here; it runs last")
    return names


__all__ = ["STAGES", "Stage", "Pipeline", "build_pipeline", "split_name", "stages_of", "GRAPH", "LOWERING", "ONNX",
           "DEFAULT_PIPELINE", "PRECISION_PASS"]
