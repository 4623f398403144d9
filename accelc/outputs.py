"""The structure of a model's outputs, kept as data so artifacts never need the model's classes.

    model(x) -> BaseModelOutput(last_hidden_state=t0, pooler_output=t1)
    graph    -> (t0, t1)                                   a flat tuple: model.pt2 loads anywhere
                                                           (a tensor or a tuple of tensors stays as it is)
    OutputStructure.pack((t0, t1)) -> BaseModelOutput(...) the class when it can be imported,
                                      else {"last_hidden_state": t0, "pooler_output": t1}

A captured graph's pytree spec names the output's Python class (transformers registers
``ModelOutput`` with torch's pytree); torch.export writes that name into ``model.pt2`` and refuses
to load it in a process where the class is not registered. accelc therefore rewrites the graph
to return its leaves as a plain tuple and keeps the structure here, as JSON-friendly data.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging

import torch
import torch.fx
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OutputStructure:
    """A tree of containers over numbered leaves: {"kind": "leaf"} or a container with children."""

    tree: dict

    @classmethod
    def from_spec(cls, spec: pytree.TreeSpec | None) -> "OutputStructure":
        return cls(_node_of_spec(spec) if spec is not None else {"kind": "tuple", "children": []})

    @property
    def is_flat_tuple(self) -> bool:
        return self.tree["kind"] == "tuple" and all(c["kind"] == "leaf" for c in self.tree["children"])

    def as_dict(self) -> dict:
        return self.tree

    @classmethod
    def from_dict(cls, data: dict) -> "OutputStructure":
        return cls(data)

    def packer(self):
        """A function from the flat tuple of leaves to the model's own output structure."""
        tree = self.tree
        if tree["kind"] == "leaf":
            return lambda flat: flat  # a single tensor: the graph returns it as it is
        if self.is_flat_tuple:
            return lambda flat: flat if type(flat) is tuple else tuple(flat)
        builder = _builder(tree, iter(range(_count(tree))))
        return lambda flat: builder(flat)


def _node_of_spec(spec: pytree.TreeSpec) -> dict:
    if spec.is_leaf():
        return {"kind": "leaf"}
    children = [_node_of_spec(c) for c in spec_children(spec)]
    kind = spec.type
    if kind is tuple:
        return {"kind": "tuple", "children": children}
    if kind is list:
        return {"kind": "list", "children": children}
    if kind is dict or kind is type(None):
        return {"kind": "dict", "keys": list(spec.context or []), "children": children}
    qualified = f"{kind.__module__}:{kind.__qualname__}"
    if isinstance(spec.context, (list, tuple)) and all(isinstance(k, str) for k in spec.context) and len(spec.context) == len(children):
        return {"kind": "mapping", "class": qualified, "keys": list(spec.context), "children": children}
    if _is_namedtuple(kind):
        return {"kind": "namedtuple", "class": qualified, "keys": list(kind._fields), "children": children}
    return {"kind": "tuple", "class": qualified, "children": children}  # unknown container: its leaves in order


def spec_children(spec: pytree.TreeSpec) -> list:
    """A TreeSpec's child specs (``children()`` from torch 2.13; the ``children_specs`` field before)."""
    children = getattr(spec, "children", None)
    return list(children()) if callable(children) else list(spec.children_specs)


def _is_namedtuple(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields")


def _count(tree: dict) -> int:
    return 1 if tree["kind"] == "leaf" else sum(_count(c) for c in tree["children"])


def import_class(qualified: str | None):
    """The class ``module:qualname`` names, or None when it cannot be imported here."""
    if not qualified:
        return None
    module_name, _, qualname = qualified.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
    except Exception:  # not installed, or blocked: the caller falls back to a dict or tuple
        log.debug("output class %s cannot be imported; returning plain containers", qualified)
        return None
    return value if isinstance(value, type) else None


def _builder(tree: dict, positions):
    kind = tree["kind"]
    if kind == "leaf":
        index = next(positions)
        return lambda flat: flat[index]
    parts = [_builder(c, positions) for c in tree["children"]]
    if kind == "list":
        return lambda flat: [p(flat) for p in parts]
    keys = tree.get("keys")
    cls = import_class(tree.get("class"))
    if kind == "mapping":
        if cls is not None:
            return lambda flat: cls(**{k: p(flat) for k, p in zip(keys, parts)})
        return lambda flat: {k: p(flat) for k, p in zip(keys, parts)}
    if kind == "dict":
        return lambda flat: {k: p(flat) for k, p in zip(keys, parts)}
    if kind == "namedtuple" and cls is not None:
        return lambda flat: cls(*(p(flat) for p in parts))
    if kind == "namedtuple":
        return lambda flat: {k: p(flat) for k, p in zip(keys, parts)}
    return lambda flat: tuple(p(flat) for p in parts)


def flatten_graph_outputs(gm: torch.fx.GraphModule) -> OutputStructure:
    """Make ``gm`` return its output leaves as a flat tuple; return the structure it had. A graph
    that returns one tensor, or a tuple of tensors, is left as it is.

    The graph's output node already holds the leaves in order; only the codegen's output spec
    (which rebuilds the container after the graph ran) changes.
    """
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is None or info.out_spec is None:
        return OutputStructure.from_spec(None) if info is not None else OutputStructure({"kind": "tuple", "children": []})
    structure = OutputStructure.from_spec(info.out_spec)
    if structure.tree["kind"] == "leaf" or structure.is_flat_tuple:
        return structure  # a tensor or a tuple of tensors: nothing to hide
    flat = pytree.tree_structure(tuple(range(info.out_spec.num_leaves)))
    gm.graph._codegen.pytree_info = info._replace(out_spec=flat)
    gm.recompile()
    return structure


__all__ = ["OutputStructure", "flatten_graph_outputs", "import_class"]
