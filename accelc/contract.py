"""The pass contract's one hard rule, enforced: a pass never writes into an existing weight.

Weights of a captured graph are the user's own tensors (``torch.export`` shares them with the
``nn.Module``), and every graph a pass manager keeps shares them too. A pass that scaled one in
place would change the user's model and the graph it was supposed to leave alone if rolled
back, and no rollback could undo it. So while a pass runs (and while its graph is checked),
:class:`WeightWriteGuard` watches every ATen op: one that writes into the storage of a tensor
the graph held when the pass started raises :class:`PassContractError` before it writes.

Writes that bypass ATen (through ``tensor.numpy()``) are not seen; the pass API's docstring
asks for new tensors (:func:`accelc.patterns.add_constant`) instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import AccelcError


class PassContractError(AccelcError):
    """A pass wrote into a weight it does not own."""


def _storage_key(x: torch.Tensor) -> int | None:
    if x.device.type == "meta" or x.is_mkldnn:
        return None
    try:
        ptr = x.untyped_storage().data_ptr()
    except Exception:  # fake tensors, opaque layouts: nothing the user owns
        return None
    return ptr or None


def _held_tensors(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(gm.named_parameters(remove_duplicate=False)) | dict(gm.named_buffers(remove_duplicate=False))
    for prefix, module in gm.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{attr}" if prefix else attr] = value
    return tensors


class WeightWriteGuard(TorchDispatchMode):
    """Raises on any ATen op that writes into one of ``tensors`` (by storage)."""

    def __init__(self, tensors: Iterable[tuple[str, torch.Tensor]]):
        super().__init__()
        self.owners: dict[int, str] = {}
        for name, tensor in tensors:
            key = _storage_key(tensor)
            if key is not None:
                self.owners.setdefault(key, name)
        self._written: dict = {}

    @classmethod
    def of(cls, gm: torch.nn.Module) -> "WeightWriteGuard":
        """A guard over every tensor ``gm`` holds: parameters, buffers and plain tensor attributes."""
        return cls(_held_tensors(gm).items())

    @classmethod
    def of_all(cls, gms: list[torch.nn.Module]) -> "WeightWriteGuard":
        """A guard over every tensor any of ``gms`` holds (the first holder names a tensor)."""
        return cls(pair for gm in gms for pair in _held_tensors(gm).items())

    def _written_args(self, func) -> list:
        positions = self._written.get(func)
        if positions is None:
            positions = [(i, a.name) for i, a in enumerate(func._schema.arguments)
                         if a.alias_info is not None and a.alias_info.is_write]
            self._written[func] = positions
        return positions

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.owners:
            for index, name in self._written_args(func):
                value = args[index] if index < len(args) else kwargs.get(name)
                for x in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(x, torch.Tensor):
                        owner = self.owners.get(_storage_key(x))
                        if owner is not None:
                            raise PassContractError(
                                f"wrote into weight {owner!r} in place ({func}); passes must leave existing tensors "
                                "alone and add new ones (accelc.patterns.add_constant)")
        return func(*args, **kwargs)


__all__ = ["WeightWriteGuard", "PassContractError"]
