"""Pass discovery: one registry over both entry-point groups, loading a pass only when it is used.

Built-in passes and third-party plugins register the same way, in their distribution's metadata::

    [project.entry-points."accelc.passes"]          # fx passes (graph and lowering stages)
    fold_things = "my_package.fold_things:FoldThings"

    [project.entry-points."accelc.onnx_passes"]     # ONNX passes (onnx stage)
    fuse_things = "my_package.fuse_things:FuseThings"

Reading the registry imports nothing: entries are names and ``module:Class`` strings until a
pipeline names one (as torch's Dynamo backend registry does), so a plugin that fails to import
breaks only the pipelines that use it, and the error names it. Within one group, the
entry-point name must equal the class's ``name`` and two distributions registering one name is
an error that names both. The same name in both groups (``fuse_attention``) is two passes;
stage-qualified names (``graph:fuse_attention``, ``onnx:fuse_attention``) tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from .errors import PassRegistryError
from .pass_base import Pass

GROUPS = {"fx": "accelc.passes", "onnx": "accelc.onnx_passes"}
GROUP = GROUPS["fx"]
BUILTIN_DISTRIBUTION = "accelc"


@dataclass(frozen=True)
class PassEntry:
    """One registered pass, not imported yet."""

    name: str
    ir: str  # "fx" | "onnx"
    value: str  # "module:Class"
    distribution: str

    @property
    def source(self) -> str:
        return f"{self.distribution} ({self.value})"

    @property
    def builtin(self) -> bool:
        return self.distribution.split(" ")[0] == BUILTIN_DISTRIBUTION


@dataclass
class Registry:
    """Every registered pass by (ir, name); classes are imported on first :meth:`load`."""

    entries: dict[tuple[str, str], PassEntry]
    _loaded: dict[tuple[str, str], type[Pass]] = field(default_factory=dict, repr=False)

    @classmethod
    def discover(cls) -> Registry:
        """Read both entry-point groups (no imports). Two distributions claiming one name in one
        group is an error naming both."""
        found: dict[tuple[str, str], PassEntry] = {}
        for ir, group in GROUPS.items():
            for ep in entry_points(group=group):
                entry = PassEntry(ep.name, ir, ep.value, _distribution(ep))
                known = found.get((ir, ep.name))
                # The same distribution can be visible twice on sys.path (an editable install and
                # a build folder); identical (name, value) pairs are one registration, not a clash.
                if known is not None and known.value != entry.value:
                    raise PassRegistryError(
                        f"pass name {ep.name!r} is registered twice in {group}: by {known.source} and by "
                        f"{entry.source}; uninstall one of them or rename its entry point")
                found.setdefault((ir, ep.name), entry)
        return cls(found)

    def names(self, ir: str) -> list[str]:
        return sorted(name for (kind, name) in self.entries if kind == ir)

    def has(self, ir: str, name: str) -> bool:
        return (ir, name) in self.entries

    def entry(self, ir: str, name: str) -> PassEntry:
        try:
            return self.entries[(ir, name)]
        except KeyError:
            known = ", ".join(self.names(ir))
            raise PassRegistryError(f"unknown {ir} pass {name!r}; known: {known} (`accelc passes` lists them)") from None

    def load(self, ir: str, name: str) -> type[Pass]:
        """The pass class, imported now; a plugin that fails to import or is not a pass of that
        IR named ``name`` is an error naming the plugin."""
        key = (ir, name)
        if key in self._loaded:
            return self._loaded[key]
        entry = self.entry(ir, name)
        try:
            cls = EntryPoint(entry.name, entry.value, GROUPS[ir]).load()
        except Exception as exc:
            raise PassRegistryError(f"pass plugin {name!r} from {entry.source} failed to import: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Pass)) or cls.ir != ir:
            raise PassRegistryError(f"entry point {name!r} from {entry.source} is not an accelc {ir} Pass subclass")
        if cls.name != name:
            raise PassRegistryError(f"entry point {name!r} from {entry.source} loads a pass named {cls.name!r}; "
                                    "the names must match")
        self._loaded[key] = cls
        return cls

    def create(self, ir: str, name: str) -> Pass:
        return self.load(ir, name)()


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def discover() -> Registry:
    return Registry.discover()


def resolve(names: list[str], registry: Registry | None = None, ir: str = "fx") -> list[Pass]:
    """Instances of the ``ir`` passes named, in order; an unknown name is a clear error."""
    registry = registry or Registry.discover()
    return [registry.create(ir, name) for name in names]


__all__ = ["Registry", "PassEntry", "discover", "resolve", "GROUPS", "GROUP"]
