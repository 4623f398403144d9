"""Build an out-of-tree pass plugin: a package outside the repo with its own entry-point metadata."""

from __future__ import annotations

import textwrap
from pathlib import Path

PLUGIN_SOURCE = '''
"""Test plugin passes: one honest, one deliberately wrong."""
import torch
from accelc import Pass, PassResult
from accelc.patterns import aten, find_nodes


class CountRelus(Pass):
    """Count relu nodes without changing anything (an honest no-op plugin)."""
    name = "count_relus"

    def run(self, gm, ctx):
        return PassResult(modified=False, stats={"relus": len(find_nodes(gm, aten.relu))})


class BreakRelu(Pass):
    """Replace relu with sigmoid: wrong on purpose, so verification must roll it back."""
    name = "break_relu"

    def run(self, gm, ctx):
        nodes = find_nodes(gm, aten.relu)
        for node in nodes:
            node.target = aten.sigmoid.default
        return PassResult(modified=bool(nodes), stats={"broken": len(nodes)})


class FoldConvBnImpostor(CountRelus):
    """Claims a built-in pass's name: registering it must be an error."""
    name = "fold_conv_bn"


class ScaleWeightsInPlace(Pass):
    """Doubles every weight in place and says it changed nothing: breaks the pass contract."""
    name = "scale_weights_in_place"

    def run(self, gm, ctx):
        with torch.no_grad():
            for p in gm.parameters():
                p.mul_(2)
        return PassResult(modified=False)


class CountRelusAfterFolding(CountRelus):
    """Asks for a place in the default graph pipeline, after fold_constants."""
    name = "count_relus_after_folding"
    stage = "graph"
    after = "fold_constants"
'''

BROKEN_SOURCE = "raise ImportError('this plugin is broken on purpose')\n"


def make_plugin(root: Path, dist: str = "accelc-test-plugin", package: str = "accelc_test_plugin",
                entries: dict[str, str] | None = None, broken: bool = False, group: str = "accelc.passes") -> Path:
    """Write ``package`` and its ``.dist-info`` under ``root`` (a folder to put on sys.path);
    ``broken``: the package raises on import."""
    entries = entries or {"count_relus": f"{package}:CountRelus", "break_relu": f"{package}:BreakRelu"}
    root.mkdir(parents=True, exist_ok=True)
    pkg = root / package
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(BROKEN_SOURCE if broken else PLUGIN_SOURCE)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entries.items())
    (info / "entry_points.txt").write_text(textwrap.dedent(f"[{group}]\n{lines}\n"))
    return root
