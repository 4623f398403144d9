"""The ONNX Runtime runtime: an ONNX model run by ``onnxruntime.InferenceSession``.

``OrtRuntime`` is a ``torch.nn.Module``: it takes and returns torch tensors, in the same output
structure as the graph module it replaces. On CUDA it binds torch's device buffers directly
(IO binding, no host round trip) and, where every shape is static, lets ORT replay a CUDA graph;
with dynamic sizes it lets ORT allocate outputs of a symbolic shape on the device.
A provider that fails to initialise falls back to the next one (TensorRT → CUDA → CPU EP), and
the record says so (:mod:`accelc.onnx.session`).

This module only runs models. Building one (export, the onnx stage's passes, the session) is
:func:`accelc.onnx.build.build_onnx_runtime`; loading a saved one is :func:`load_onnx_runtime`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import weakref

import numpy as np
import torch
import torch.utils.dlpack
from torch.utils import _pytree as pytree

from ..background import Background
from ..errors import ArtifactError
from ..onnx.session import open_session
from ..onnx.weights_apart import DATA_SUFFIX, MODEL_NAME
from .arrays import to_numpy

MODEL_FILE = MODEL_NAME  # its weights beside it, in MODEL_FILE + DATA_SUFFIX (accelc.onnx.weights_apart)
META_FILE = "onnx_runtime.json"

_NP_OF_TORCH = {
    torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64, torch.int64: np.int64,
    torch.int32: np.int32, torch.bool: np.bool_, torch.int8: np.int8, torch.uint8: np.uint8,
}
_TORCH_OF_ORT = {
    "tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
    "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(bool)": torch.bool,
    "tensor(int8)": torch.int8, "tensor(uint8)": torch.uint8, "tensor(bfloat16)": torch.bfloat16,
}


class OrtRuntime(torch.nn.Module):
    """Runs an ONNX model in ONNX Runtime; torch tensors in, torch tensors out.

    ``owned_dir`` is a temporary folder (the model's, from a build) that the runtime owns: it is
    removed by :meth:`close`, or when the runtime is garbage-collected. A loaded artifact's
    folder is the user's and is never owned.
    """

    def __init__(self, model_path: str, device: torch.device, meta: dict, precision: str = "fp32",
                 threads: int | None = None, owned_dir: str | None = None, model_in_memory=None,
                 pending_write=None, open_dynamic: bool = False):
        """``model_in_memory``: the model at ``model_path`` as
        :class:`accelc.onnx.weights_apart.WeightsApart`, for the session to open from while
        ``pending_write`` (an :class:`accelc.onnx.export.PendingWrite`) still writes the file, or
        before it is written (:meth:`attach_file`); it is not kept. ``open_dynamic``: open the
        session for other sizes now too, from ``model_in_memory``, beside the pinned one, for a
        caller that calls at other sizes at once (the onnx stage's check): the two opens are
        ORT's own work, which releases the GIL, so they overlap (GPT-2: 1.5-2 s)."""
        super().__init__()
        self.model_path = model_path
        self._pending_write = pending_write
        # A finalizer, not __del__: it holds no reference to the runtime and also runs at exit.
        self._owned = weakref.finalize(self, shutil.rmtree, owned_dir, ignore_errors=True) if owned_dir else None
        self.device = torch.device(device)
        self.meta = meta
        self.precision = precision
        self.out_spec = pytree.treespec_loads(meta["out_spec"]) if meta.get("out_spec") else None
        on_cuda = self.device.type == "cuda"
        self.cuda_graph = bool(on_cuda and is_static(meta))
        folder = os.path.dirname(os.path.abspath(model_path))
        self.threads = threads
        # On the CPU the session runs with every dynamic size pinned to the example's (ORT then
        # plans memory and picks kernels as for a static model: 4-9% faster on ResNet-50 and
        # BERT); a call at other sizes runs on a second, dynamic session, opened at its first use.
        self.pinned_dims = pinned_dims(meta) if self.device.type == "cpu" else {}
        source = model_in_memory if model_in_memory is not None else self.model_file()
        self._dynamic_session = None
        self._dynamic_run = None
        self._dynamic_lock = threading.Lock()
        beside = None
        if open_dynamic and model_in_memory is not None and self.pinned_dims:
            beside = Background(lambda: open_session(model_in_memory, self.device, folder, precision, threads=threads)[0],
                                "accelc-ort-open")
        self.session, self.providers = open_session(source, self.device, folder, precision, self.cuda_graph, threads,
                                                    self.pinned_dims)
        if beside is not None:
            self._dynamic_session = beside.result()
            self._dynamic_run = _fast_run(self._dynamic_session)
        self.providers["pinned_dims"] = dict(self.pinned_dims)
        self.cuda_graph = self.providers.get("cuda_graph", False)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_types = [_TORCH_OF_ORT.get(o.type, torch.float32) for o in self.session.get_outputs()]
        # Position of each session input among forward()'s arguments (the exporter may drop unused ones).
        self.arg_index = [meta["arg_names"].index(n) if n in meta.get("arg_names", []) else i
                          for i, n in enumerate(self.input_names)]
        self.io_binding = on_cuda and self.providers["used"] != "CPUExecutionProvider"
        self._feeds = list(zip(self.input_names, self.arg_index))
        self._run = _fast_run(self.session)
        self._pinned_shapes = ([tuple(meta["example_shapes"][n]) for n in self.input_names] if self.pinned_dims
                               else None)
        self._single_output = self.out_spec is not None and self.out_spec.is_leaf()
        # The build's answers on the cases its onnx stage was checked on, when this runtime ran
        # that check (accelc.onnx.optimize.OrtVerifier): the caller compares them, not a rerun.
        self.checked_answers: list | None = None
        self._graph_buffers: tuple[list, list] | None = None
        # A static model's outputs have the example's shapes; with any dynamic size ORT allocates
        # each output at the size the call needs (None).
        static = is_static(meta) and len(meta.get("output_shapes", [])) == len(self.output_names)
        self._fixed_output_shapes = ([tuple(s) for s in meta["output_shapes"]] if static
                                     else [None] * len(self.output_names))

    def _pack(self, flat: list):
        if self._single_output:
            return flat[0]
        return pytree.tree_unflatten(flat, self.out_spec) if self.out_spec is not None else tuple(flat)

    def forward(self, *args):
        # Every line here is paid on each call; for a small model it is a fifth of the latency,
        # so the CPU path is kept to the feed dict, session.run and the zero-copy wrap of outputs.
        if self.io_binding:
            return self._pack(self._run_bound([args[i] for i in self.arg_index]))
        run = self._run
        if self._pinned_shapes is not None:
            for (_, i), shape in zip(self._feeds, self._pinned_shapes):
                if args[i].shape != shape:
                    run = self._dynamic_run or self._open_dynamic_session()
                    break
        outs = run(self.output_names, {n: to_numpy(args[i]) for n, i in self._feeds})
        return self._pack([torch.from_numpy(o) for o in outs])  # ORT returns fresh C-contiguous arrays

    def _open_dynamic_session(self):
        """The session for calls at sizes other than the pinned ones (opened once, thread-safe)."""
        with self._dynamic_lock:
            if self._dynamic_run is None:
                folder = os.path.dirname(os.path.abspath(self.model_path))
                self._dynamic_session, _ = open_session(self.model_file(), self.device, folder, self.precision,
                                                        threads=self.threads)
                self._dynamic_run = _fast_run(self._dynamic_session)
            return self._dynamic_run

    def take_checked_answers(self) -> list | None:
        """:attr:`checked_answers`, handed over once: the runtime holds no outputs after (GPT-2's
        logits at the quick sets are tens of MB)."""
        answers, self.checked_answers = self.checked_answers, None
        return answers

    def attach_file(self, pending_write, owned_dir: str | None = None) -> None:
        """The model file, being written by ``pending_write``, for a runtime opened from bytes
        before it was written; ``owned_dir`` (its folder) is then the runtime's to remove."""
        self._pending_write = pending_write
        if owned_dir:
            self._owned = weakref.finalize(self, shutil.rmtree, owned_dir, ignore_errors=True)

    def model_file(self) -> str:
        """model.onnx's path, once the file is whole (the build writes it while the session opens)."""
        if self._pending_write is not None:
            self._pending_write.wait()
        return self.model_path

    def release_dynamic_session(self) -> None:
        """Drop the dynamic session (its memory) until a call at other sizes needs it again."""
        if self.model_path and os.path.exists(self.model_file()):
            with self._dynamic_lock:
                self._dynamic_session = self._dynamic_run = None

    def _output_shapes(self, feeds: list) -> list[tuple | None]:
        """Each output's shape when the model is static, else None (ORT allocates it)."""
        return list(self._fixed_output_shapes)

    def _run_bound(self, feeds: list) -> list[torch.Tensor]:
        """IO binding on torch CUDA buffers; with a CUDA graph, the same buffers every call.

        An output whose shape has a dynamic size is bound to the device without a buffer: ORT
        allocates it at the size the call needs and it comes back to torch through DLPack.
        """
        feeds = [x.to(self.device).contiguous() for x in feeds]
        shapes = self._output_shapes(feeds)
        if self.cuda_graph:  # only for fully static models: every output shape is known
            if self._graph_buffers is None:
                ins = [torch.empty_like(x) for x in feeds]
                outs = [torch.empty(s, dtype=t, device=self.device) for s, t in zip(shapes, self.output_types)]
                self._graph_buffers = (ins, outs)
            ins, outs = self._graph_buffers
            for buf, x in zip(ins, feeds):
                buf.copy_(x)
        else:
            ins = feeds
            outs = [None if s is None else torch.empty(s, dtype=t, device=self.device) for s, t in zip(shapes, self.output_types)]
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, x in zip(self.input_names, ins):
            binding.bind_input(name, "cuda", index, _NP_OF_TORCH[x.dtype], tuple(x.shape), x.data_ptr())
        for name, y in zip(self.output_names, outs):
            if y is None:
                binding.bind_output(name, "cuda", index)
            else:
                binding.bind_output(name, "cuda", index, _NP_OF_TORCH[y.dtype], tuple(y.shape), y.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        if any(y is None for y in outs):
            allocated = binding.get_outputs()
            outs = [_from_ort_value(allocated[i], self.device) if y is None else y for i, y in enumerate(outs)]
        return [y.clone() for y in outs] if self.cuda_graph else outs

    def close(self) -> None:
        """Remove the temporary folder the runtime owns, now (nothing for a loaded artifact).

        The session keeps its model in memory, but :meth:`save`, which copies model.onnx out of
        that folder, no longer can; save first."""
        if self._owned is not None:
            if self._pinned_shapes is not None:
                self._open_dynamic_session()  # while model.onnx is still there to open
            self.model_file()  # not removed under the writer's feet
            self._owned()

    def save(self, folder: str) -> None:
        """Write model.onnx (and model.onnx.data, its weights) and the runtime's metadata into ``folder``."""
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, MODEL_FILE)
        if os.path.abspath(target) != os.path.abspath(self.model_file()):
            # Copied as they are: the weights' file is named after the model file, which is
            # model.onnx in both folders.
            for suffix in ("", DATA_SUFFIX):
                if os.path.exists(self.model_path + suffix):
                    shutil.copyfile(self.model_path + suffix, target + suffix)
        with open(os.path.join(folder, META_FILE), "w") as f:
            json.dump(self.meta, f, indent=2)


def load_onnx_runtime(folder: str, device: str | torch.device = "cpu") -> OrtRuntime:
    """Open ``folder``/model.onnx with the metadata saved beside it."""
    path, meta_path = os.path.join(folder, MODEL_FILE), os.path.join(folder, META_FILE)
    for needed in (path, meta_path):
        if not os.path.exists(needed):
            raise ArtifactError(f"{needed} is missing; save the artifact again with --backend onnxruntime")
    with open(meta_path) as f:
        meta = json.load(f)
    return OrtRuntime(path, torch.device(device), meta, meta.get("precision", "fp32"))


def _from_ort_value(value, device: torch.device) -> torch.Tensor:
    """An output ORT allocated, as a torch tensor on ``device``: zero-copy through DLPack where
    this onnxruntime build has it, else through host memory."""
    try:
        tensor = torch.utils.dlpack.from_dlpack(value._get_c_value().to_dlpack())
    except Exception:  # a build without DLPack support
        tensor = torch.from_numpy(value.numpy())
    return tensor.to(device)


def _fast_run(session):
    """The session's compiled core: InferenceSession.run re-validates the feed names and wraps
    the call in a provider-fallback handler on every call (3 µs, a tenth of a small MLP's
    latency). The feeds are built from the session's own input names, so the checks cannot fail;
    an onnxruntime without the attribute gets the public method."""
    core = getattr(session, "_sess", None)
    if core is not None and hasattr(core, "run"):
        return lambda names, feeds, _run=core.run: _run(names, feeds, None)
    return session.run


def pinned_dims(meta: dict) -> dict[str, int]:
    """Each named dynamic size of the model at its example value (``meta["example_shapes"]``),
    e.g. ``{"batch": 8, "seq": 128}``; empty for a static model or an older artifact."""
    shapes = meta.get("example_shapes") or {}
    pinned = {}
    for name, axes in (meta.get("dynamic_axes") or {}).items():
        for axis, dim_name in axes.items():
            if name in shapes and int(axis) < len(shapes[name]):
                pinned[dim_name] = shapes[name][int(axis)]
    return pinned


def is_static(meta: dict) -> bool:
    """Whether a runtime's metadata says every input size is fixed (older artifacts: "static")."""
    if "dynamic_axes" in meta:
        return not any(meta["dynamic_axes"].values())
    return bool(meta.get("static"))


__all__ = ["OrtRuntime", "load_onnx_runtime", "is_static", "MODEL_FILE", "META_FILE"]
