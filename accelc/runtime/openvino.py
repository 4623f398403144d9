"""The OpenVINO runtime: an OpenVINO model run by the CPU plugin; saved as IR (``model.xml`` + ``model.bin``).

``OpenVinoRuntime`` is a ``torch.nn.Module``: torch tensors in, torch tensors out, in the output
structure of the graph module it replaces. Everything that decides speed and precision is set
explicitly at compile time, never left to OpenVINO's defaults, which differ between CPUs:

- threads: torch's thread count (the same as every other runtime gets), one stream, the
  latency hint;
- precision: ``INFERENCE_PRECISION_HINT`` is f32 for ``fp32`` (on CPUs with AMX or AVX512_BF16
  OpenVINO would otherwise run bf16) and bf16 for ``bf16``. The model itself stays fp32:
  OpenVINO's CPU plugin lowers the matrix work to bf16 and keeps what it judges sensitive
  (normalisations, softmax accumulations) in f32. The precision it actually runs at is read
  back from the compiled model and recorded.

Calls from several threads are safe: each thread gets its own infer request (an infer request
holds the buffers of one call in flight; the compiled model is shared).

This module only runs models. Building one from the optimised graph is
:func:`accelc.onnx.to_openvino.build_openvino_runtime`; loading a saved one is
:func:`load_openvino_runtime`. OpenVINO is optional: it is imported when a runtime is made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import weakref

import torch
from torch.utils import _pytree as pytree

from ..errors import ArtifactError
from .arrays import to_numpy

MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
META_FILE = "openvino_runtime.json"
INSTALL_HINT = "pip install openvino (or accelc[openvino])"

# accelc's precision names as OpenVINO's element types for INFERENCE_PRECISION_HINT, and back.
HINTS = {"fp32": "f32", "bf16": "bf16"}
_PRECISION_OF_TYPE = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


class OpenVinoRuntime(torch.nn.Module):
    """Runs ``model`` on OpenVINO's CPU plugin: the path of an IR (``model.xml``, its ``.bin``
    beside it: a saved artifact), or an ``openvino.Model`` (a build's, read from its ONNX files,
    whose weights OpenVINO maps from them: :meth:`save` writes its IR).

    ``meta`` carries what the runtime needs to map calls (``arg_names``: forward()'s argument of
    each model input, ``out_spec``: the output structure) and ``precision`` ("fp32" | "bf16").
    ``owned_dir`` is the build's temporary folder, removed by :meth:`close` or when the runtime
    is garbage-collected; a loaded artifact's folder is the user's and is never owned.
    """

    def __init__(self, model, meta: dict, threads: int | None = None, owned_dir: str | None = None):
        super().__init__()
        import openvino as ov

        # A build's model is kept to write its IR at save(): writing it at every build, as most
        # builds are never saved, was 2.2 s of GPT-2's (500 MB of model.bin).
        self.xml_path = model if isinstance(model, str) else None
        self.ov_model = None if isinstance(model, str) else model
        self._owned = weakref.finalize(self, shutil.rmtree, owned_dir, ignore_errors=True) if owned_dir else None
        self.meta = meta
        self.precision = meta.get("precision", "fp32")
        if self.precision not in HINTS:
            raise ValueError(f"OpenVINO runs fp32 or bf16 here, not {self.precision}")
        self.threads = int(threads or torch.get_num_threads())
        self.compiled = shared_core().compile_model(model, "CPU", compile_config(self.precision, self.threads))
        self.inference_precision = inference_precision_of(self.compiled)
        self.out_spec = pytree.treespec_loads(meta["out_spec"]) if meta.get("out_spec") else None
        self._single_output = self.out_spec is not None and self.out_spec.is_leaf()
        arg_names = meta.get("arg_names") or []
        self.arg_index = []
        for position, port in enumerate(self.compiled.inputs):
            named = [arg_names.index(n) for n in port.get_names() if n in arg_names]
            self.arg_index.append(named[0] if named else position)
        self._local = threading.local()
        self._tensor = ov.Tensor
        self._outputs = len(self.compiled.outputs)
        self.ov_version = ov.__version__

    @property
    def settings(self) -> dict:
        """What the compiled model runs with, for the report."""
        return {"device": "CPU", "threads": self.threads, "streams": 1, "performance_hint": "LATENCY",
                "precision_hint": HINTS[self.precision], "inference_precision": self.inference_precision,
                "openvino": self.ov_version}

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def forward(self, *args):
        # The request's own tensors, not InferRequest.infer(inputs): that wrapper builds a dict of
        # results on every call, 40 us of a small MLP's 100 (benchmarks/bench_openvino_calls.py).
        # Inputs are shared: OpenVINO reads the torch tensors' memory in place (``args`` keeps
        # them alive for the call). Outputs are copied: the request reuses its buffers.
        request = self._request()
        for port, i in enumerate(self.arg_index):
            request.set_input_tensor(port, self._tensor(to_numpy(args[i]), shared_memory=True))
        request.infer()
        flat = [torch.from_numpy(request.get_output_tensor(k).data.copy()) for k in range(self._outputs)]
        if self._single_output:
            return flat[0]
        return pytree.tree_unflatten(flat, self.out_spec) if self.out_spec is not None else tuple(flat)

    def close(self) -> None:
        """Remove the temporary folder the runtime owns, now. The compiled model stays usable, and
        so does :meth:`save`: the weights OpenVINO mapped from the folder's files stay mapped."""
        if self._owned is not None:
            self._owned()

    def save(self, folder: str) -> None:
        """Write model.xml, model.bin and the runtime's metadata into ``folder``."""
        import openvino as ov

        os.makedirs(folder, exist_ok=True)
        if self.ov_model is not None:
            ov.save_model(self.ov_model, os.path.join(folder, MODEL_XML), compress_to_fp16=False)
        elif os.path.abspath(folder) != os.path.dirname(os.path.abspath(self.xml_path)):
            shutil.copyfile(self.xml_path, os.path.join(folder, MODEL_XML))
            shutil.copyfile(os.path.splitext(self.xml_path)[0] + ".bin", os.path.join(folder, MODEL_BIN))
        with open(os.path.join(folder, META_FILE), "w") as f:
            json.dump(self.meta | {"settings": self.settings}, f, indent=2)


def load_openvino_runtime(folder: str, device: str | torch.device = "cpu") -> OpenVinoRuntime:
    """Open ``folder``/model.xml with the metadata saved beside it (OpenVINO runs on the CPU)."""
    if torch.device(device).type != "cpu":
        raise ArtifactError(f"{folder} holds an OpenVINO model, which accelc runs on the CPU only; load it with "
                            "device='cpu' (or re-create the artifact for the device with --device)")
    path, meta_path = os.path.join(folder, MODEL_XML), os.path.join(folder, META_FILE)
    for needed in (path, os.path.join(folder, MODEL_BIN), meta_path):
        if not os.path.exists(needed):
            raise ArtifactError(f"{needed} is missing; save the artifact again with --backend openvino")
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise ArtifactError(f"{folder} holds an OpenVINO model and openvino is not installed: {INSTALL_HINT}") from exc
    with open(meta_path) as f:
        meta = json.load(f)
    meta.pop("settings", None)  # what it ran with where it was built; this machine compiles anew
    return OpenVinoRuntime(path, meta)


_core = None
_core_lock = threading.Lock()


def shared_core():
    """One ``openvino.Core`` for the process: it keeps the CPU plugin loaded between models."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def compile_config(precision: str | None, threads: int) -> dict:
    """The CPU plugin's settings: ``threads`` threads, one stream, the latency hint, and the
    inference precision pinned to ``precision`` (``fp32`` | ``bf16``; None: OpenVINO's own
    choice, bf16 on CPUs with AVX512_BF16 or AMX, which only the bench's peer row uses)."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.inference_num_threads: int(threads),
        props.num_streams: 1,
    }
    if precision is not None:
        config[hints.inference_precision] = ov.Type.f32 if precision == "fp32" else ov.Type.bf16
    return config


def inference_precision_of(compiled) -> str:
    """The precision a compiled model runs its matrix work at ("fp32", "bf16"), read back from it."""
    import openvino.properties.hint as hints

    name = compiled.get_property(hints.inference_precision).get_type_name()
    return _PRECISION_OF_TYPE.get(name, name)


def cpu_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has native bf16 on this CPU (AVX512_BF16 or AMX)."""
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_reason(exc: BaseException) -> str:
    """The useful line of an OpenVINO exception (several lines of C++ source locations), for a
    one-line reason in a report or a bench row."""
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


__all__ = ["OpenVinoRuntime", "load_openvino_runtime", "compile_config", "inference_precision_of", "cpu_runs_bf16",
           "openvino_reason", "MODEL_XML", "MODEL_BIN", "META_FILE", "INSTALL_HINT", "HINTS"]
