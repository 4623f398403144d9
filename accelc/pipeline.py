"""The default pipeline: an explicit, ordered list of pass names.

Order matters and is decided here, in one place, not by priorities or import order:
- ``remove_noops`` first so later pattern passes see conv -> batch_norm without a dropout between;
- folding before CSE/DCE, which then clean up what folding left behind.
"""

from __future__ import annotations

DEFAULT_PIPELINE: list[str] = [
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
]


# Lowerings the PyTorch runtime applies when it loads a graph, after the graph passes and never
# saved, because they pay off only there:
# - to_channels_last (first: the conv lowerings read its layout): memory format is a PyTorch
#   notion; in the graph handed to the ONNX exporter it turns a dynamic-batch flatten into an
#   as_strided index computation (ten extra nodes, 5% of a small CNN's latency in ORT);
# - fuse_conv_pointwise, pack_linear_weights: oneDNN/MKL prepacked weights are opaque tensors
#   that cannot be serialised;
# - merge_parallel_linears: one GEMM for Q/K/V helps PyTorch, but ONNX Runtime packs Q/K/V into
#   its Attention op itself and measured ~6% slower on BERT when handed a pre-merged GEMM + Split;
# - bind_direct_calls (last: later passes match OpOverloads): the bindings it calls are not ATen
#   graph targets that torch.export can serialise.
# The saved model.pt2 (and the ONNX export) hold the portable graph; each load redoes these.
RUNTIME_PIPELINES: dict[str, list[str]] = {
    "cpu": ["to_channels_last", "merge_parallel_linears", "fuse_conv_pointwise", "pack_linear_weights", "bind_direct_calls"],
    "cuda": ["to_channels_last", "merge_parallel_linears", "bind_direct_calls"],
}


def build_pipeline(passes: list[str] | None = None, disable: list[str] | None = None) -> list[str]:
    """``passes`` replaces the default list when given; ``disable`` removes names from it."""
    names = list(passes) if passes else list(DEFAULT_PIPELINE)
    disabled = set(disable or ())
    return [n for n in names if n not in disabled]
