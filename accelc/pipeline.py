"""The default pipeline: an explicit, ordered list of pass names.

Order matters and is decided here, in one place, not by priorities or import order:
- ``remove_noops`` first so later pattern passes see conv -> batch_norm without a dropout between;
- folding before CSE/DCE, which then clean up what folding left behind.
"""

from __future__ import annotations

DEFAULT_PIPELINE: list[str] = [
    "remove_noops",
    "fold_conv_bn",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]


def build_pipeline(passes: list[str] | None = None, disable: list[str] | None = None) -> list[str]:
    """``passes`` replaces the default list when given; ``disable`` removes names from it."""
    names = list(passes) if passes else list(DEFAULT_PIPELINE)
    disabled = set(disable or ())
    return [n for n in names if n not in disabled]
