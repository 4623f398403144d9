"""What :func:`accelc.accelerate` returns: the optimised runtime behind a guarded call.

    call ─► signature check (count, dtype, rank, sizes, ranges) ─► runtime ─► outputs packed as the model's
             └─ outside it: the eager model answers (one warning), or InputMismatchError
"""

from __future__ import annotations

import warnings

import torch

from .errors import AccelcFallbackWarning, InputMismatchError
from .outputs import OutputStructure
from .shapes import Signature
from .source import first_line

# The hooks torch registers for every module; the dicts are updated in place, so holding them works.
_GLOBAL_MODULE_HOOKS = tuple(getattr(torch.nn.modules.module, name, {}) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


class AcceleratedModule(torch.nn.Module):
    """Callable like the original model; carries ``report`` and can ``save`` itself.

    Every call is checked against ``signature`` (the inputs the optimised graph was verified for:
    count, dtypes, ranks, static sizes, dynamic ranges) before it reaches a backend. A call
    outside it runs the eager model when there is one (with a one-time warning), or raises
    :class:`accelc.errors.InputMismatchError` naming the input, what was expected and what came.
    """

    def __init__(self, runner: torch.nn.Module, report: dict, graph_module=None, example_inputs: tuple = (),
                 signature: Signature | None = None, outputs: OutputStructure | None = None, eager=None):
        super().__init__()
        self.runner = runner
        self._run_direct = runner.forward  # a plain attribute: no nn.Module __getattr__ on each call
        self.report = report
        self.graph_module = graph_module
        self.example_inputs = example_inputs
        self.signature = signature if runner is not eager else None
        self.outputs = outputs
        self._pack = outputs.packer() if outputs is not None and runner is not eager else None
        self.__dict__["_eager"] = eager  # not a submodule: its weights are the user's, not part of this module
        self._warned: set[str] = set()

    def forward(self, *args, **kwargs):
        signature = self.signature
        if kwargs:
            return self._outside(args, kwargs, f"keyword arguments {', '.join(kwargs)} given; the model was "
                                               "captured with positional inputs only")
        if signature is not None:
            why = signature.mismatch(args)
            if why is not None:
                return self._outside(args, kwargs, why)
        try:
            out = self._run_direct(*args)  # straight to the runtime: no second round of module hooks
        except Exception as exc:
            if self._pack is None and self.signature is None:
                raise  # the eager model itself (nothing was accelerated): its own error
            return self._backend_raised(args, exc)
        return out if self._pack is None else self._pack(out)

    def _backend_raised(self, args: tuple, exc: Exception):
        """The optimised model raised on a call inside its signature (a token id past the position
        table, say): the eager model decides whether that is the input's fault or accelc's."""
        shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else repr(x) for x in args)
        why = f"the optimised model raised {first_line(exc)} on inputs of shape {shapes}"
        return self._outside(args, {}, why, cause=exc)

    def __call__(self, *args, **kwargs):
        # nn.Module.__call__ spends ~5 µs per call on hook bookkeeping, a tenth of a small model's
        # latency on ONNX Runtime. With no hook registered (here or globally) forward is called
        # directly; with any, the normal path runs them.
        if self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or \
                self._backward_pre_hooks or any(_GLOBAL_MODULE_HOOKS):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def _outside(self, args: tuple, kwargs: dict, why: str, cause: Exception | None = None):
        """A call the optimised graph was not verified for (or raised on): the eager model answers
        it, or it is refused."""
        eager = self.__dict__.get("_eager")
        if eager is None:
            hint = "check the inputs" if cause is not None else self._how_to_widen(why)
            raise InputMismatchError(f"accelc: {why}; this artifact serves only the inputs it was verified for "
                                     f"({hint})") from cause
        try:
            out = eager(*args, **kwargs)
        except Exception as exc:
            raise InputMismatchError(f"accelc: {why} (the model itself raised {first_line(exc)})") from exc
        if why not in self._warned:
            self._warned.add(why)
            advice = "this is accelc's fault: please report it" if cause is not None else \
                f"To accelerate them, {self._how_to_widen(why)}"
            warnings.warn(f"accelc: {why}; running the eager model for such calls (correct, not accelerated). {advice}",
                          AccelcFallbackWarning, stacklevel=3)
        return out

    @staticmethod
    def _how_to_widen(why: str) -> str:
        if getattr(why, "untied", False):
            return "give those inputs the same size, or capture with example inputs whose sizes differ there"
        if getattr(why, "bad_values", False):
            return "check the inputs: they index a table of the model (token ids past the vocabulary, say)"
        symbol = getattr(why, "out_of_range", None)
        if symbol:
            axis = symbol.split("_")[0]
            return f"capture with a wider range: accelerate(..., dynamic={{{axis!r}: (1, N)}}) or --dynamic {axis}=1..N"
        return "capture with example inputs of that kind (dtype, rank, fixed sizes)"

    @property
    def captured(self) -> bool:
        return self.graph_module is not None

    def save(self, path: str, force: bool = False) -> str:
        """Write the artifact folder (model.pt2, report.json, report.html, fingerprint.json)."""
        from .artifact import save_artifact

        return save_artifact(self, path, force=force)

    @classmethod
    def load(cls, path: str, device: str | None = None) -> "AcceleratedModule":
        """An artifact folder written by :meth:`save`, with no eager model behind it: a call
        outside the signature it was verified for is refused."""
        from .artifact import read_artifact

        return cls(**read_artifact(path, device))


__all__ = ["AcceleratedModule"]
