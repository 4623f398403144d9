"""Run the ONNX passes on an exported model, each checked in ONNX Runtime against the reference.

    ONNX model ─► for each pass in ONNX_PIPELINES[device]: copy → pass → ORT (CPU) on every input set
                  → same answers as the graph module on all of them? keep : roll back, record why

Like the fx pass manager, a pass that changes the outputs never reaches the user. A model with
dynamic sizes is checked at several of them (the example and the caller's probe inputs: other
batch sizes and sequence lengths), so a pass that is right only at the example's shape, having
written a size into the graph, is rolled back.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import onnx
import onnx_ir as ir
import torch

from ..pass_base import PassResult
from ..source import first_line
from ..verify import Comparison, compare_outputs, tolerance_for_precision
from .export import save_model
from .pass_base import OnnxPassContext, discover_onnx_passes

log = logging.getLogger(__name__)

# Order matters: attention first (it needs the exporter's own MatMul/Add layout around the
# softmax, and takes the Q/K/V biases into MultiHeadAttention before fold_bias_add sees them);
# int8 quantisation before fold_bias_add, so the quantiser sees each 3-D linear as MatMul (+ Add)
# rather than a Gemm between two Reshapes;
# bias + GELU before SkipLayerNormalization, whose contrib outputs ONNX shape inference cannot
# type, leaving the bias rule without the shapes it checks; precision, then cleanup, last.
#
# The pipelines differ because ORT's kernels do: on the CPU provider the packed Attention,
# SkipLayerNormalization and BiasGelu kernels each measured slower than what they replace
# (BERT-base, seq 512, 2 threads: 1.21x over a plain export without them, 1.07x with them), so
# the CPU pipeline keeps GEMMs whole, bias inside Gemm, and LayerNormalization unfused.
ONNX_PIPELINES = {
    "cpu": ["fuse_attention", "split_causal_attention", "drop_padded_keys", "quantize_int8", "fold_bias_add", "fuse_fast_gelu", "convert_fp16", "cleanup_casts_reshapes"],
    "cuda": ["fuse_attention", "pack_qkv_attention", "fuse_fast_gelu", "fuse_bias_gelu", "fuse_skip_layer_norm",
             "fold_bias_add", "convert_fp16", "cleanup_casts_reshapes"],
}


def run_all_in_ort(model: onnx.ModelProto, input_sets: list[tuple], arg_names: list[str], workdir: str) -> list[list[torch.Tensor]]:
    """Outputs of ``model`` on each input set, from one CPU InferenceSession (graph optimisation ALL)."""
    import onnxruntime as ort

    from ..runtime.onnxruntime import disabled_fusions, session_options

    path = os.path.join(workdir, "candidate.onnx")
    save_model(model, path)
    session = ort.InferenceSession(path, sess_options=session_options(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled_fusions("CPUExecutionProvider"))
    results = []
    for inputs in input_sets:
        feeds = {}
        for i, value in enumerate(session.get_inputs()):
            index = arg_names.index(value.name) if value.name in arg_names else i
            feeds[value.name] = inputs[index].detach().cpu().numpy()
        results.append([torch.from_numpy(np.ascontiguousarray(o)) for o in session.run(None, feeds)])
    return results


def run_in_ort(model: onnx.ModelProto, inputs: tuple, arg_names: list[str], workdir: str) -> list[torch.Tensor]:
    """Outputs of ``model`` on ``inputs`` in a CPU InferenceSession, as torch tensors."""
    return run_all_in_ort(model, [inputs], arg_names, workdir)[0]


def shapes_of(inputs: tuple) -> str:
    return ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else repr(x) for x in inputs)


def check_in_ort(model: onnx.ModelProto, cases: list[tuple[tuple, list]], arg_names: list[str], workdir: str,
                 tolerance_of) -> Comparison:
    """``model`` against the reference outputs of every (inputs, reference) case; the first
    failure names the input shapes it happened at, else the worst error over all cases."""
    outputs = run_all_in_ort(model, [inputs for inputs, _ in cases], arg_names, workdir)
    worst = Comparison(True, 0.0, 0.0)
    for (inputs, reference), got in zip(cases, outputs):
        check = compare_outputs(got, reference, tolerance_of)
        if not check.ok:
            check.message = f"at input shapes {shapes_of(inputs)}: {check.message}"
            return check
        if check.max_abs_error >= worst.max_abs_error:
            worst = Comparison(True, check.max_abs_error, max(check.max_rel_error, worst.max_rel_error))
    return worst


def optimize_onnx(model: onnx.ModelProto, cases: list[tuple[tuple, list]], meta: dict, precision: str,
                  workdir: str, pass_names: list[str] | None = None,
                  device: str = "cpu") -> tuple[onnx.ModelProto, list[dict]]:
    """Apply the ONNX passes in order; returns the model and one record per pass.

    ``cases`` are (inputs, flat reference outputs) pairs: the example first, then inputs at other
    sizes for a model with dynamic ones. A pass is kept only if ORT matches every reference.
    """
    registry = discover_onnx_passes()
    pipeline = ONNX_PIPELINES["cuda" if device == "cuda" else "cpu"]
    names = [n for n in (pass_names if pass_names is not None else pipeline) if n in registry]
    ctx = OnnxPassContext(precision=precision, device=device)
    tol = tolerance_for_precision(precision)
    records = []
    for name in names:
        ctx.current_pass = name
        start = time.perf_counter()
        record: dict = {"name": name, "modified": False, "stats": {}, "status": "unchanged"}
        candidate = ir.serde.deserialize_model(model)  # a fresh copy: the pass edits it in place
        try:
            result: PassResult = registry[name]()(candidate, ctx)
            record["stats"], record["modified"] = result.stats, result.modified
            if result.modified:
                proto = ir.serde.serialize_model(candidate)
                check = check_in_ort(proto, cases, meta["arg_names"], workdir, tol)
                record["max_abs_error"] = check.max_abs_error
                if check.ok:
                    model, record["status"] = proto, "applied"
                else:
                    record["status"] = f"rolled back: {check.message}"
        except Exception as exc:  # a pass or ORT failing on its output: keep the previous model
            record["status"] = f"rolled back: {first_line(exc)}"
            log.debug("ONNX pass %s failed", name, exc_info=True)
        record["seconds"] = round(time.perf_counter() - start, 3)
        records.append(record)
        if record["status"].startswith("rolled back"):
            log.info("accelc: ONNX pass %s %s", name, record["status"])
    if ctx.refusals:
        records.append({"name": "refusals", "items": [r.__dict__ for r in ctx.refusals]})
    return model, records


__all__ = ["optimize_onnx", "run_in_ort", "run_all_in_ort", "check_in_ort", "ONNX_PIPELINES"]
