"""OpenVINO plumbing for the bench's OpenVINO systems: converting the PyTorch module with
``openvino.convert_model``, compiling it for the CPU plugin with torch's thread count, one stream
and the latency hint (:func:`compile_for_cpu`), :class:`OpenVinoRunner` that feeds it torch
tensors. The settings are the OpenVINO backend's (:mod:`accelc.runtime.openvino`), bar the
precision hint, which the ``openvino`` row leaves to OpenVINO.

OpenVINO is optional (``pip install openvino`` or ``accelc[openvino]``): every import of it is
inside a function, and a missing one raises ``ImportError`` for the bench to report the system
as unavailable.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

from ..runtime.openvino import INSTALL_HINT, compile_config, inference_precision_of, openvino_reason, shared_core


class OpenVinoError(RuntimeError):
    """An OpenVINO failure whose message is already one readable line."""


def import_reason(exc: ImportError) -> str:
    """Why OpenVINO is unavailable: the install hint, or what broke when it is installed."""
    missing = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and (missing == "openvino" or missing.startswith("openvino.")):
        return INSTALL_HINT
    if "openvino" in str(exc) and "None in sys.modules" in str(exc):
        return INSTALL_HINT
    return f"openvino is installed but does not import ({exc}); {INSTALL_HINT}"


def load_plugins() -> None:
    """Load the CPU plugin now (OpenVINO loads it at first use, about 9 MB), so the first OpenVINO
    system's memory growth does not include it."""
    shared_core().get_property("CPU", "FULL_DEVICE_NAME")


def convert(model: torch.nn.Module, inputs: tuple):
    """``openvino.convert_model`` on the PyTorch module itself (it traces with TorchScript)."""
    import openvino as ov

    # The TorchScript tracer warns (and OpenVINO's frontend prints) per op; the row keeps only
    # the failure's useful line.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            return ov.convert_model(model, example_input=tuple(inputs))
        except Exception as exc:
            raise OpenVinoError(f"convert_model: {openvino_reason(exc)}") from exc


def compile_for_cpu(ov_model, threads: int, f32: bool):
    """Compile for the CPU plugin: ``threads`` threads, one stream, the latency hint, and with
    ``f32`` the inference precision hint pinned to f32 (otherwise OpenVINO picks: bf16 on CPUs
    with AVX512_BF16 or AMX, f32 elsewhere). Returns (compiled model, the precision it runs at,
    as ``fp32``/``fp16``/``bf16``)."""
    config = compile_config("fp32" if f32 else None, threads)
    try:
        compiled = shared_core().compile_model(ov_model, "CPU", config)
        return compiled, inference_precision_of(compiled)
    except Exception as exc:
        raise OpenVinoError(f"compile_model: {openvino_reason(exc)}") from exc


class OpenVinoRunner:
    """Runs a compiled model through one infer request on torch tensors (numpy views in, the
    outputs copied out), so ``run`` returns OpenVINO's result and :meth:`to_torch` the tensors."""

    def __init__(self, compiled, names: list[str]):
        self.request = compiled.create_infer_request()
        ov_inputs = [set(port.get_names()) for port in compiled.inputs]
        if len(ov_inputs) == len(names):
            self.feed = list(range(len(names)))
        else:
            # The converter may drop an input the graph does not use; feed the rest by name.
            by_name = [next((i for i, n in enumerate(names) if n in port_names), None) for port_names in ov_inputs]
            if None in by_name:
                raise OpenVinoError(f"the converted model takes {len(ov_inputs)} inputs where the model takes {len(names)}")
            self.feed = by_name

    def __call__(self, *tensors):
        arrays = [tensors[i].detach().numpy() for i in self.feed]
        try:
            return self.request.infer(arrays, share_inputs=True)
        except Exception as exc:
            raise OpenVinoError(f"infer: {openvino_reason(exc)}") from exc

    def to_torch(self, raw) -> list[torch.Tensor]:
        return [torch.from_numpy(a) for a in raw.to_tuple()]
