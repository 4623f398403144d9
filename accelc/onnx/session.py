"""How accelc opens ONNX Runtime sessions: providers, options, the ORT fusions it leaves out.

One place for these, below both users: the runtime (:mod:`accelc.runtime.onnxruntime`) opens its
session with :func:`open_session`, and the ONNX stage (:mod:`accelc.onnx.optimize`) checks each
pass in a CPU session with the same options and disabled fusions, so a pass is judged on the
graph ORT will really run.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch

from ..errors import ArtifactError
from ..source import first_line

if TYPE_CHECKING:
    from .weights_apart import WeightsApart

log = logging.getLogger(__name__)

TRT_CACHE = "trt_cache"  # TensorRT's engine cache, a folder beside model.onnx

# ORT graph fusions switched off per provider, because their kernels measured slower than what
# they replace (see the CPU list of the onnx stage in accelc.stages). A plain InferenceSession on
# the artifact gives the same answers without this, only slower: pass the same list as
# ``disabled_optimizers`` (meta.json records it) to match accelc's speed.
DISABLED_FUSIONS = {"CPUExecutionProvider": ["SkipLayerNormFusion", "BiasGeluFusion"]}


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


def disabled_fusions(provider: str) -> list[str]:
    return list(DISABLED_FUSIONS.get(provider, []))


def session_options(threads: int | None = None, pinned_dims: dict[str, int] | None = None):
    """accelc's options; ``pinned_dims`` fixes named dynamic sizes (``{"batch": 8}``) for this
    session, so ORT plans memory and picks kernels as for a static model."""
    ort = _ort()
    options = ort.SessionOptions()
    for name, size in (pinned_dims or {}).items():
        options.add_free_dimension_override_by_name(name, int(size))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Explicit, not ORT's default of every core: the process may share the machine with torch.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def open_session(model: "str | WeightsApart", device: torch.device, folder: str, precision: str = "fp32",
                 cuda_graph: bool = False, threads: int | None = None, pinned_dims: dict[str, int] | None = None):
    """An InferenceSession on the best provider that initialises, on ``model`` (a path, or the
    model in memory as :class:`accelc.onnx.weights_apart.WeightsApart`); returns (session, record)."""
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
        options = session_options(threads, pinned_dims)
        source = model
        if not isinstance(model, str):
            model.add_to(options)
            source = model.graph_bytes
        try:
            session = ort.InferenceSession(source, sess_options=options,
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
    what = model if isinstance(model, str) else "the model"
    raise ArtifactError(f"onnxruntime could not open {what} on any provider: {'; '.join(record['fallbacks'])}")


__all__ = ["provider_plan", "DISABLED_FUSIONS", "disabled_fusions", "session_options", "open_session", "TRT_CACHE"]
