"""ONNX Runtime plumbing for the bench's ORT systems: exporting a model to ONNX (dynamo or
TorchScript), running onnxruntime.transformers' optimizer, opening an InferenceSession with
torch's thread count, :class:`OrtRunner` that feeds it torch tensors, and :func:`_short_reason`,
which turns any exception (ONNX Runtime's long ones included) into a row's one-line reason.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import warnings

import torch

from ..source import first_line


def _input_names(model: torch.nn.Module, count: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params][:count]
    except (TypeError, ValueError):
        names = []
    return names if len(names) == count else [f"input_{i}" for i in range(count)]


def _export_onnx(model: torch.nn.Module, inputs: tuple, path: str, dynamo: bool) -> None:
    names = _input_names(model, len(inputs))
    # The exporters print their steps (and the TorchScript one its whole graph on failure);
    # keep the terminal readable: the failure's first line becomes the system's reason.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, inputs, dynamo=True, input_names=names)
            program.save(path)
        else:
            torch.onnx.export(model, inputs, path, dynamo=False, input_names=names)


class OrtRunner:
    """Runs an InferenceSession on torch tensors: numpy feeds on CPU, IO binding on CUDA."""

    def __init__(self, session, names: list[str], device: torch.device):
        self.session = session
        session_inputs = [i.name for i in session.get_inputs()]
        if set(session_inputs) <= set(names):
            # The exporter may drop an input the graph does not use; feed the rest by name.
            self.feed = [(names.index(n), n) for n in session_inputs]
        else:
            self.feed = list(enumerate(session_inputs))
        self.output_names = [o.name for o in session.get_outputs()]
        self.device = device

    def __call__(self, *tensors):
        if self.device.type == "cpu":
            return self.session.run(None, {n: tensors[i].detach().numpy() for i, n in self.feed})
        binding = self.session.io_binding()
        index = self.device.index or 0
        for i, n in self.feed:
            t = tensors[i].contiguous()
            binding.bind_input(n, "cuda", index, _numpy_dtype(t.dtype), list(t.shape), t.data_ptr())
        for n in self.output_names:
            binding.bind_output(n, "cuda", index)
        self.session.run_with_iobinding(binding)
        return binding

    def to_torch(self, raw) -> list[torch.Tensor]:
        arrays = raw.copy_outputs_to_cpu() if self.device.type == "cuda" else raw
        return [torch.from_numpy(a) for a in arrays]


def _numpy_dtype(dtype: torch.dtype):
    return torch.empty((), dtype=dtype).numpy().dtype


def _ort_optimize(path: str, out_path: str, model_type: tuple[str, int, int], device: torch.device, opt_level: int | None) -> dict:
    """Run onnxruntime.transformers' optimizer; returns the counts of fused operators."""
    from onnxruntime.transformers.optimizer import optimize_model

    ort_type, heads, hidden = model_type
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(path, model_type=ort_type, num_heads=heads, hidden_size=hidden,
                                   opt_level=opt_level, use_gpu=device.type == "cuda")
    optimized.save_model_to_file(out_path)
    return {k: v for k, v in (optimized.get_fused_operator_statistics() or {}).items() if v}


def _ort_session(path: str, threads: int, providers: list):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the same thread count torch uses
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=providers)


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """One line, without ONNX Runtime's source paths, at most ``limit`` characters."""
    text = first_line(exc)
    if "ONNXRuntimeError" in text:
        text = re.sub(r"\S*onnxruntime_src/\S+\s*", "", text)
        text = re.sub(r"(\[ONNXRuntimeError\] : \d+ : \w+ : )+", "", text)
        text = re.sub(r"\S+\.cc:\d+ (\S+ )?", "", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
