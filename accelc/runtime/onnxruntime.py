"""The ONNX Runtime runtime: an exported graph run by ``onnxruntime.InferenceSession``.

    gm ─export─► ONNX ─ONNX passes (each verified in ORT)─► model.onnx ─► InferenceSession
                                                                  (TensorRT → CUDA → CPU EP)

``OrtRuntime`` is a ``torch.nn.Module``: it takes and returns torch tensors, in the same output
structure as the graph module it replaces. On CUDA it binds torch's device buffers directly
(IO binding, no host round trip) and, where every shape is static, lets ORT replay a CUDA graph;
with dynamic sizes it lets ORT allocate outputs of a symbolic shape on the device.
A provider that fails to initialise falls back to the next one, and the record says so.

The model's dynamic sizes are the graph's: ``build_onnx_runtime`` takes torch.export's
``dynamic_shapes`` spec for the inputs, and ``probe_inputs`` at other sizes on which every ONNX
pass and the final session are checked against the graph module, as on the example.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import onnx
import torch
import torch.fx
import torch.utils.dlpack
from torch.utils import _pytree as pytree

from ..errors import ArtifactError
from ..onnx.export import OnnxExport, export_graph, save_model
from ..source import first_line
from ..verify import compare_outputs, tolerance_for_precision

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
META_FILE = "onnx_runtime.json"
TRT_CACHE = "trt_cache"

_NP_OF_TORCH = {
    torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64, torch.int64: np.int64,
    torch.int32: np.int32, torch.bool: np.bool_, torch.int8: np.int8, torch.uint8: np.uint8,
}
_TORCH_OF_ORT = {
    "tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
    "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(bool)": torch.bool,
    "tensor(int8)": torch.int8, "tensor(uint8)": torch.uint8, "tensor(bfloat16)": torch.bfloat16,
}


def _ort():
    import onnxruntime

    return onnxruntime


def provider_plan(device: torch.device, folder: str, precision: str = "fp32") -> list[tuple[str, dict]]:
    """Providers to try, best first, among those this onnxruntime build has."""
    available = set(_ort().get_available_providers())
    plan: list[tuple[str, dict]] = []
    if device.type == "cuda":
        index = device.index or 0
        if "TensorrtExecutionProvider" in available:
            plan.append(("TensorrtExecutionProvider", {
                "device_id": index, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": os.path.join(folder, TRT_CACHE),
                "trt_fp16_enable": precision == "fp16",
            }))
        if "CUDAExecutionProvider" in available:
            plan.append(("CUDAExecutionProvider", {"device_id": index}))
    plan.append(("CPUExecutionProvider", {}))
    return plan


# ORT graph fusions switched off per provider, because their kernels measured slower than what
# they replace (see the CPU pipeline in accelc.onnx.optimize). A plain InferenceSession on the
# artifact gives the same answers without this, only slower: pass the same list as
# ``disabled_optimizers`` (meta.json records it) to match accelc's speed.
DISABLED_FUSIONS = {"CPUExecutionProvider": ["SkipLayerNormFusion", "BiasGeluFusion"]}


def disabled_fusions(provider: str) -> list[str]:
    return list(DISABLED_FUSIONS.get(provider, []))


def session_options(threads: int | None = None):
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Explicit, not ORT's default of every core: the process may share the machine with torch.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def open_session(model_path: str, device: torch.device, folder: str, precision: str = "fp32",
                 cuda_graph: bool = False, threads: int | None = None):
    """An InferenceSession on the best provider that initialises; returns (session, record)."""
    ort = _ort()
    plan = provider_plan(device, folder, precision)
    record: dict = {"tried": [], "used": None, "fallbacks": []}
    attempts = []
    for start in range(len(plan)):
        chain = [(name, dict(opts)) for name, opts in plan[start:]]
        if cuda_graph and chain[0][0] == "CUDAExecutionProvider":
            # ORT replays a CUDA graph only when every node runs on the CUDA EP, with fixed
            # buffers (IO binding); a graph it refuses gets the same EP without the CUDA graph.
            attempts.append([(n, dict(o, enable_cuda_graph="1") if n == "CUDAExecutionProvider" else o) for n, o in chain])
        attempts.append(chain)
    for chain in attempts:
        wanted = chain[0][0]
        record["tried"].append(wanted)
        if wanted == "TensorrtExecutionProvider":
            os.makedirs(chain[0][1]["trt_engine_cache_path"], exist_ok=True)
        try:
            session = ort.InferenceSession(model_path, sess_options=session_options(threads),
                                           providers=[n for n, _ in chain], provider_options=[o for _, o in chain],
                                           disabled_optimizers=disabled_fusions(wanted))
        except Exception as exc:  # a provider's library or options failed: try the next one
            record["fallbacks"].append(f"{wanted}: {first_line(exc)}")
            log.info("onnxruntime: %s failed to initialise (%s); trying the next provider", wanted, first_line(exc))
            continue
        active = session.get_providers()
        if active[0] != wanted:
            # ORT drops a provider whose shared library does not load, with only a log line.
            record["fallbacks"].append(f"{wanted}: not active after session creation (ORT chose {active[0]})")
        record["used"] = active[0]
        record["disabled_fusions"] = disabled_fusions(wanted)
        record["active"] = active
        record["cuda_graph"] = active[0] == "CUDAExecutionProvider" and any(o.get("enable_cuda_graph") == "1" for _, o in chain)
        return session, record
    raise ArtifactError(f"onnxruntime could not open {model_path} on any provider: {'; '.join(record['fallbacks'])}")


class OrtRuntime(torch.nn.Module):
    """Runs an ONNX model in ONNX Runtime; torch tensors in, torch tensors out."""

    def __init__(self, model_path: str, device: torch.device, meta: dict, precision: str = "fp32",
                 threads: int | None = None):
        super().__init__()
        self.model_path = model_path
        self.device = torch.device(device)
        self.meta = meta
        self.precision = precision
        self.out_spec = pytree.treespec_loads(meta["out_spec"]) if meta.get("out_spec") else None
        on_cuda = self.device.type == "cuda"
        self.cuda_graph = bool(on_cuda and is_static(meta))
        folder = os.path.dirname(os.path.abspath(model_path))
        self.session, self.providers = open_session(model_path, self.device, folder, precision, self.cuda_graph, threads)
        self.cuda_graph = self.providers.get("cuda_graph", False)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_types = [_TORCH_OF_ORT.get(o.type, torch.float32) for o in self.session.get_outputs()]
        # Position of each session input among forward()'s arguments (the exporter may drop unused ones).
        self.arg_index = [meta["arg_names"].index(n) if n in meta.get("arg_names", []) else i
                          for i, n in enumerate(self.input_names)]
        self.io_binding = on_cuda and self.providers["used"] != "CPUExecutionProvider"
        self._feeds = list(zip(self.input_names, self.arg_index))
        # The session's compiled core: InferenceSession.run re-validates the feed names and wraps
        # the call in a provider-fallback handler on every call (3 µs, a tenth of a small MLP's
        # latency). The feeds here are built from the session's own input names, so the checks
        # cannot fail; an onnxruntime without the attribute gets the public method.
        core = getattr(self.session, "_sess", None)
        if core is not None and hasattr(core, "run"):
            self._run = lambda names, feeds, _run=core.run: _run(names, feeds, None)
        else:
            self._run = self.session.run
        self._single_output = self.out_spec is not None and self.out_spec.is_leaf()
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
        outs = self._run(self.output_names, {n: _to_numpy(args[i]) for n, i in self._feeds})
        return self._pack([torch.from_numpy(o) for o in outs])  # ORT returns fresh C-contiguous arrays

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

    def save(self, folder: str) -> None:
        """Write model.onnx (+ external data above 2 GB) and the runtime's metadata into ``folder``."""
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, MODEL_FILE)
        if os.path.abspath(target) != os.path.abspath(self.model_path):
            save_model(onnx.load(self.model_path), target)
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


def is_static(meta: dict) -> bool:
    """Whether a runtime's metadata says every input size is fixed (older artifacts: "static")."""
    if "dynamic_axes" in meta:
        return not any(meta["dynamic_axes"].values())
    return bool(meta.get("static"))


def _to_numpy(x):
    if type(x) is torch.Tensor and x.is_cpu and not x.requires_grad and x.is_contiguous():
        return x.numpy()  # the common case, and the cheapest: a view, no copy
    if isinstance(x, torch.Tensor):
        if x.is_cpu:
            return x.detach().contiguous().numpy()
        return x.detach().cpu().contiguous().numpy()
    return np.asarray(x)


def _cpu(inputs: tuple) -> tuple:
    return tuple(x.to("cpu") if isinstance(x, torch.Tensor) else x for x in inputs)


def _accepts(model: onnx.ModelProto, arg_names: list[str], inputs: tuple) -> bool:
    """Whether ``inputs`` fit the fixed sizes of ``model``'s inputs (a static export takes the example only)."""
    for k, value in enumerate(model.graph.input):
        index = arg_names.index(value.name) if value.name in arg_names else k
        x = inputs[index] if index < len(inputs) else None
        if not isinstance(x, torch.Tensor):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != x.dim() or any(d.HasField("dim_value") and d.dim_value != n for d, n in zip(dims, x.shape)):
            return False
    return True


def build_onnx_runtime(gm: torch.fx.GraphModule, example_inputs: tuple, device, precision: str, workdir: str,
                       dynamic_shapes=None, probe_inputs: list[tuple] | None = None) -> tuple[torch.nn.Module, dict]:
    """Export ``gm``, run the ONNX passes (each verified in ORT), open a session; return it and its report.

    ``dynamic_shapes`` is torch.export's spec for ``example_inputs`` (None: static), and
    ``probe_inputs`` are input sets at other sizes: references are computed from ``gm`` once on
    each and on the example, and every ONNX pass and the final session must match all of them.
    A probe the exported model cannot take (the export fell back to static shapes) is left out,
    and the report says so.

    The module is an :class:`OrtRuntime`, or, when some op cannot be exported (report["partial"]),
    a ``torch.fx.GraphModule`` whose exportable regions are OrtRuntime submodules.
    """
    from ..onnx.export import torchscript_input_names
    from ..onnx.optimize import optimize_onnx, shapes_of
    from ..onnx.partial import build_partial, unexportable_nodes

    start = time.perf_counter()
    device = torch.device(device)
    os.makedirs(workdir, exist_ok=True)
    probe_inputs = list(probe_inputs or [])
    unsupported = unexportable_nodes(gm)
    if unsupported:
        module, report = build_partial(gm, example_inputs, device, precision, workdir, unsupported,
                                       dynamic_shapes=dynamic_shapes, probe_inputs=probe_inputs)
        report["seconds"] = round(time.perf_counter() - start, 3)
        return module, report
    inputs = _cpu(example_inputs)
    gm = gm.to("cpu")
    with torch.inference_mode():
        reference = gm(*inputs)
        probe_refs = [pytree.tree_leaves(gm(*_cpu(p))) for p in probe_inputs]
    flat_ref, spec = pytree.tree_flatten(reference)
    exported: OnnxExport = export_graph(gm, inputs, workdir, dynamic_shapes=dynamic_shapes)
    meta = {
        "arg_names": [n.name for n in gm.graph.nodes if n.op == "placeholder"],
        "out_spec": pytree.treespec_dumps(spec),
        "output_shapes": [list(t.shape) for t in flat_ref],
        "dynamic_axes": {name: {str(d): s for d, s in axes.items()} for name, axes in exported.dynamic_axes.items()},
        "precision": precision,
        "exporter": exported.exporter,
    }
    if exported.exporter == "torchscript":
        meta["arg_names"] = torchscript_input_names(len(inputs))
    cases = [(inputs, flat_ref)]
    skipped = 0
    for probe, ref in zip(probe_inputs, probe_refs):
        probe = _cpu(probe)
        if _accepts(exported.model, meta["arg_names"], probe):
            cases.append((probe, ref))
        else:
            skipped += 1
    model, pass_report = optimize_onnx(exported.model, cases, meta, precision, workdir, device=device.type)
    path = os.path.join(workdir, MODEL_FILE)
    save_model(model, path)
    runtime = OrtRuntime(path, device, meta, precision)
    meta["disabled_fusions"] = runtime.providers["disabled_fusions"]  # saved in meta.json for plain-ORT users
    tol = tolerance_for_precision(precision)
    check = compare_outputs(runtime(*[x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]), reference, tol)
    for probe, ref in cases[1:]:
        if not check.ok:
            break
        got = runtime(*[x.to(device) if isinstance(x, torch.Tensor) else x for x in probe])
        at_probe = compare_outputs(pytree.tree_leaves(got), ref, tol)
        if not at_probe.ok:
            at_probe.message = f"at input shapes {shapes_of(probe)}: {at_probe.message}"
            check = at_probe
        elif at_probe.max_abs_error > check.max_abs_error:
            check = at_probe
    report = {
        "export": exported.as_dict(),
        "opset": exported.opset,
        "providers": runtime.providers,
        "onnx_passes": pass_report,
        "nodes": {"exported": len(exported.model.graph.node), "optimised": len(model.graph.node)},
        "verification": check.as_dict(),
        "probes": {"checked": len(cases) - 1, "skipped": skipped,
                   **({"why_skipped": "the ONNX model has static shapes (see export.attempts)"} if skipped else {})},
        "seconds": round(time.perf_counter() - start, 3),
    }
    return runtime, report


__all__ = ["OrtRuntime", "build_onnx_runtime", "load_onnx_runtime", "provider_plan", "open_session", "is_static"]
