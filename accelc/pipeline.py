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
    "fuse_attention",  # before merging linears: it matches Q/K/V as separate projections' outputs
    "merge_parallel_linears",
    "cancel_transposes",  # after attention matching, which reads the transposes/views as written
    "merge_views",
    "lower_precision",  # last before CSE/DCE, which clean up its casts; a no-op at fp32
    "to_channels_last",  # after every pass that rewrites conv weights (they would lose the layout)
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]


# Lowerings a runtime applies when it loads a graph, after the graph passes and never saved:
# their results are device-specific (oneDNN prepacked weights are opaque tensors that cannot be
# serialised), so the saved model.pt2 holds the portable graph and each load redoes them.
RUNTIME_PIPELINES: dict[str, list[str]] = {
    "cpu": ["fuse_conv_pointwise"],
    "cuda": [],
}


def build_pipeline(passes: list[str] | None = None, disable: list[str] | None = None) -> list[str]:
    """``passes`` replaces the default list when given; ``disable`` removes names from it."""
    names = list(passes) if passes else list(DEFAULT_PIPELINE)
    disabled = set(disable or ())
    return [n for n in names if n not in disabled]
