"""OpenVINO plumbing for the bench's OpenVINO systems: converting the PyTorch module with
``openvino.convert_model``, compiling it for the CPU plugin with torch's thread count, one stream
and the latency hint (:func:`compile_for_cpu`), :class:`OpenVinoRunner` that feeds it torch
tensors, and :func:`openvino_reason`, which turns OpenVINO's long exceptions into a row's one line.

OpenVINO is optional (``pip install openvino`` or ``accelc[openvino]``): every import of it is
inside a function, and a missing one raises ``ImportError`` for the bench to report the system
as unavailable.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import torch

INSTALL_HINT = "pip install openvino (or accelc[openvino])"

# OpenVINO's element type names (ov.Type.get_type_name()) as the bench's precision names.
_PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


_core = None  # one ov.Core for the process: it keeps the CPU plugin loaded between systems


def _shared_core():
    global _core
    if _core is None:
        import openvino as ov

        _core = ov.Core()
    return _core


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


def openvino_reason(exc: BaseException) -> str:
    """The useful line of an OpenVINO exception, without its C++ source locations."""
    text = str(exc)
    unconverted = re.search(r"No conversion rule found for operations:\s*([^\n]+)", text)
    if unconverted:
        return f"no conversion rule for {unconverted.group(1).strip()}"
    failed = re.search(r"Conversion is failed for:\s*([^\n]+)", text)
    if failed:
        return f"conversion failed for {failed.group(1).strip()}"
    for line in text.splitlines():
        line = re.sub(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)\s*", "", line.strip())
        if line and not line.startswith("FrontEnd API failed with"):
            return line
    return type(exc).__name__


def load_plugins() -> None:
    """Load the CPU plugin now (OpenVINO loads it at first use, about 9 MB), so the first OpenVINO
    system's memory growth does not include it."""
    _shared_core().get_property("CPU", "FULL_DEVICE_NAME")


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
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.inference_num_threads: int(threads),
        props.num_streams: 1,
    }
    if f32:
        config[hints.inference_precision] = ov.Type.f32
    try:
        compiled = _shared_core().compile_model(ov_model, "CPU", config)
        chosen = compiled.get_property(hints.inference_precision).get_type_name()
    except Exception as exc:
        raise OpenVinoError(f"compile_model: {openvino_reason(exc)}") from exc
    return compiled, _PRECISIONS.get(chosen, chosen)


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
