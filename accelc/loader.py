"""Read a user's model.py into ``(module, inputs)`` the way ``python model.py`` would see it.

The contract: ``get_model()`` returning an ``nn.Module`` and ``get_inputs()`` returning example
tensors, or module-level ``model`` and ``inputs``. The file's folder goes first on ``sys.path`` so its
sibling imports work; its ``if __name__ == "__main__":`` block does not run.

A folder with a config.json is a Hugging Face model folder (``save_pretrained``'s output): it is
read by :mod:`accelc.hf_folder`, which builds the example inputs from the config (``batch`` and
``seq`` size them; they mean nothing for a model.py, whose get_inputs() decides).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType

import torch

from .errors import ModelLoadError, UserInputError
from .logs import take_over_new_loggers
from .source import exception_location, first_line


@dataclass
class LoadedModel:
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    path: str


def load_model_file(path: str, batch: int | None = None, seq: int | None = None) -> LoadedModel:
    """Import ``path`` and return its model (in eval mode) and example inputs.

    ``path`` may also be a Hugging Face model folder; ``batch`` and ``seq`` then size its example
    inputs (default 1 and 128, capped at the model's max_position_embeddings)."""
    from . import hf_folder

    if hf_folder.is_hf_folder(path):
        model, inputs = hf_folder.load_hf_folder(path, batch=batch, seq=seq)
        take_over_new_loggers()  # transformers set up its own stderr handler on import
        return LoadedModel(model, inputs, os.path.abspath(path))
    if os.path.isdir(path):
        raise UserInputError(
            f"{path} is a folder without {hf_folder.CONFIG_FILE}; give a model.py file, or a Hugging Face model "
            "folder written by save_pretrained (config.json and the weights)"
        )
    if (batch is not None or seq is not None) and os.path.exists(path):  # a missing path: "no such file" below
        given = " and ".join(f"--{n}" for n, v in (("batch", batch), ("seq", seq)) if v is not None)
        raise UserInputError(
            f"only a Hugging Face model folder takes {given} (accelc builds its example inputs); "
            f"{os.path.basename(path)} makes its own in get_inputs(): drop the option, or change the shapes there"
        )
    user_module = _import_file(path)
    model = _get_model(user_module, path)
    inputs = normalize_inputs(_get_inputs(user_module, path), source=f"{os.path.basename(path)}")
    model.eval()
    take_over_new_loggers()  # libraries the model file imported may have set up their own logging
    return LoadedModel(model, inputs, os.path.abspath(path))


def normalize_inputs(raw, source: str = "inputs") -> tuple[torch.Tensor, ...]:
    """Accept one tensor or a list/tuple of tensors; anything else is a clear error."""
    if isinstance(raw, torch.Tensor):
        return (raw,)
    if not isinstance(raw, (tuple, list)):
        raise ModelLoadError(
            f"{source}: example inputs must be a tensor or a tuple of tensors, got {type(raw).__name__}; "
            "return e.g. (torch.randn(1, 3, 224, 224),)"
        )
    for i, item in enumerate(raw):
        if not isinstance(item, torch.Tensor):
            raise ModelLoadError(
                f"{source}: example input {i} is a {type(item).__name__}, not a tensor; "
                "accelc takes a tuple of tensors as example inputs"
            )
    if not raw:
        raise ModelLoadError(f"{source}: example inputs are empty; give at least one tensor")
    return tuple(raw)


def _import_file(path: str) -> ModuleType:
    if not os.path.exists(path):
        raise UserInputError(f"{path}: no such file; give the path to a model.py that defines get_model() and get_inputs(), "
                             "or to a Hugging Face model folder")
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    name = "accelc_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserInputError(f"{path}: cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        where = f"{exc.filename or path}:{exc.lineno}"
        raise ModelLoadError(f"{os.path.relpath(where) if exc.filename else where}: syntax error: {exc.msg}; fix the file and try again") from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        where = exception_location(exc, prefer=path) or path
        raise ModelLoadError(f"{where}: importing the model file raised {first_line(exc)}") from exc
    return module


def _public_names(module: ModuleType) -> str:
    names = sorted(n for n in vars(module) if not n.startswith("_") and not isinstance(vars(module)[n], ModuleType))
    return ", ".join(names) if names else "nothing public"


def _call(module: ModuleType, fn_name: str, path: str):
    fn = getattr(module, fn_name)
    if not callable(fn):
        raise ModelLoadError(f"{path}: {fn_name} is a {type(fn).__name__}, not a function")
    try:
        return fn()
    except Exception as exc:
        where = exception_location(exc, prefer=path) or path
        raise ModelLoadError(f"{where}: {fn_name}() raised {first_line(exc)}") from exc


def _get_model(module: ModuleType, path: str) -> torch.nn.Module:
    base = os.path.basename(path)
    if hasattr(module, "get_model"):
        model, origin = _call(module, "get_model", path), "get_model()"
    elif hasattr(module, "model"):
        model, origin = module.model, "model"
    else:
        raise ModelLoadError(
            f"{base} defines neither get_model() nor `model` (it defines: {_public_names(module)}); "
            "add get_model() returning an nn.Module and get_inputs() returning example tensors"
        )
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{origin} in {base} gave a {type(model).__name__}, not a torch.nn.Module; return the model itself")
    return model


def _get_inputs(module: ModuleType, path: str):
    base = os.path.basename(path)
    if hasattr(module, "get_inputs"):
        return _call(module, "get_inputs", path)
    if hasattr(module, "inputs"):
        return module.inputs
    raise ModelLoadError(
        f"{base} defines neither get_inputs() nor `inputs` (it defines: {_public_names(module)}); "
        "add get_inputs() returning a tuple of example tensors"
    )
