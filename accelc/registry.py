"""Pass discovery through the ``accelc.passes`` entry-point group.

Built-in passes and third-party plugins register the same way, in their distribution's metadata::

    [project.entry-points."accelc.passes"]
    fold_things = "my_package.fold_things:FoldThings"

The entry-point name must equal the class's ``name``. Two distributions registering one name is an
error that names both, rather than one silently shadowing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from .errors import PassRegistryError
from .pass_base import Pass

GROUP = "accelc.passes"


@dataclass(frozen=True)
class RegisteredPass:
    name: str
    cls: type[Pass]
    source: str  # "distribution (module:Class)"

    @property
    def description(self) -> str:
        return self.cls.description()


def _source(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    dist_name = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{dist_name} ({ep.value})"


def discover() -> dict[str, RegisteredPass]:
    """Every registered pass by name. Raises on duplicates and on entries that are not passes."""
    found: dict[str, RegisteredPass] = {}
    seen_values: dict[tuple[str, str], str] = {}
    for ep in entry_points(group=GROUP):
        source = _source(ep)
        # The same distribution can be visible twice on sys.path (e.g. an editable install and a
        # build folder); identical (name, value) pairs are the same registration, not a clash.
        if (ep.name, ep.value) in seen_values:
            continue
        seen_values[(ep.name, ep.value)] = source
        if ep.name in found:
            raise PassRegistryError(
                f"pass name {ep.name!r} is registered twice: by {found[ep.name].source} and by {source}; "
                "uninstall one of them or rename its entry point"
            )
        try:
            cls = ep.load()
        except Exception as exc:
            raise PassRegistryError(f"pass plugin {ep.name!r} from {source} failed to import: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise PassRegistryError(f"entry point {ep.name!r} from {source} is not an accelc Pass subclass")
        if cls.name != ep.name:
            raise PassRegistryError(f"entry point {ep.name!r} from {source} loads a pass named {cls.name!r}; the names must match")
        found[ep.name] = RegisteredPass(ep.name, cls, source)
    return found


def resolve(names: list[str], registry: dict[str, RegisteredPass] | None = None) -> list[Pass]:
    """Instantiate passes by name, in the given order; an unknown name is a clear error."""
    registry = discover() if registry is None else registry
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise PassRegistryError(
            f"unknown pass {', '.join(repr(n) for n in unknown)}; known passes: {', '.join(sorted(registry))} "
            "(`accelc passes` lists them)"
        )
    return [registry[n].cls() for n in names]
