"""Read a Hugging Face model folder (written by ``save_pretrained``) into ``(module, inputs)``.

    DIR/config.json + DIR/model.safetensors (or pytorch_model.bin, or sharded with an index)

The class comes from ``config.architectures[0]`` (``AutoModel`` when the config names none), the
weights from the folder only: ``local_files_only`` on every call, so nothing is looked up on the
Hub and nothing in the folder is written. The model is loaded in float32 (accelc's ``precision``
decides the compute precision), in eval mode, with ``use_cache`` off (in memory, not in the folder):
a key/value cache is not a tensor accelc can return, and the example passes none in.

The example inputs are built from the config and the model's own description of its inputs
(``model.main_input_name`` and the parameter order of ``model.forward``), because accelc passes
them positionally:

    text   (main input input_ids):    input_ids int64 (batch, seq) in [0, vocab_size), seeded,
                                      plus attention_mask of ones when it is forward's 2nd parameter
    vision (main input pixel_values): pixel_values float32 (batch, num_channels, image_size, image_size)
"""

from __future__ import annotations

import glob
import inspect
import os

import torch

from .errors import ModelLoadError, UserInputError
from .source import first_line

CONFIG_FILE = "config.json"
DEFAULT_BATCH = 1
DEFAULT_SEQ = 128
SEED = 0
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def load_hf_folder(path: str, batch: int | None = None,
                   seq: int | None = None) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The folder's model (float32, eval mode) and example inputs: ``batch`` rows of ``seq`` tokens, or of one image."""
    folder = os.path.abspath(path)
    if not any(glob.glob(os.path.join(glob.escape(folder), pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelLoadError(
            f"{path} has {CONFIG_FILE} but no weights (model.safetensors or pytorch_model.bin); "
            "save the model there with model.save_pretrained(folder), which writes both"
        )
    transformers = _import_transformers(path)
    config = _load_config(transformers, folder, path)
    model_class, name = _model_class(transformers, config, path)
    bars = transformers.utils.logging
    bar_was_on = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()  # a "Loading weights" bar would glue onto accelc's progress line
    try:
        model = model_class.from_pretrained(folder, config=config, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: {name}.from_pretrained raised {first_line(exc)}") from exc
    finally:
        if bar_was_on:
            bars.enable_progress_bar()
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{path}: {name}.from_pretrained gave a {type(model).__name__}, not a torch.nn.Module")
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # one forward over the example, no cache passed in: none to return
    model.to(torch.float32)
    model.eval()
    return model, example_inputs(model, config, path, batch=batch, seq=seq)


def example_inputs(model: torch.nn.Module, config, path: str, batch: int | None = None,
                   seq: int | None = None) -> tuple[torch.Tensor, ...]:
    """Seeded example inputs for ``model``, in the order its forward takes them positionally."""
    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1 or (seq is not None and seq < 1):
        raise UserInputError(f"--batch and --seq must be at least 1, got batch {batch}, seq {seq}")
    main = getattr(model, "main_input_name", None) or "input_ids"
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params]
    what = type(model).__name__
    generator = torch.Generator().manual_seed(SEED)
    if not names or names[0] != main:
        raise ModelLoadError(
            f"{path}: cannot build example inputs for {what}: its main input {main} is not the first parameter of "
            f"forward({', '.join(names)}), and accelc passes inputs positionally; write a model.py whose get_model() "
            "wraps the model and whose get_inputs() returns its inputs"
        )
    if main == "input_ids":
        vocab = getattr(config, "vocab_size", None)
        if not isinstance(vocab, int) or vocab < 1:
            raise ModelLoadError(f"{path}: cannot build input_ids for {what}: {CONFIG_FILE} has no vocab_size; "
                                 "write a model.py whose get_inputs() returns the model's inputs")
        seq = _seq_length(config, seq, path)
        inputs = [torch.randint(0, vocab, (batch, seq), generator=generator, dtype=torch.int64)]
        if len(names) > 1 and names[1] == "attention_mask":
            inputs.append(torch.ones(batch, seq, dtype=torch.int64))
        return tuple(inputs)
    if seq is not None:
        raise UserInputError(f"--seq applies to token inputs (input_ids); {what} takes {main}; drop --seq")
    if main == "pixel_values":
        channels = getattr(config, "num_channels", None)
        size = getattr(config, "image_size", None)
        if isinstance(size, (list, tuple)) and len(size) == 2:
            height, width = size
        else:
            height = width = size
        if not all(isinstance(v, int) and v > 0 for v in (channels, height, width)):
            raise ModelLoadError(
                f"{path}: cannot build pixel_values for {what}: {CONFIG_FILE} needs num_channels and image_size "
                f"(has {channels!r}, {size!r}); write a model.py whose get_inputs() returns the model's inputs"
            )
        return (torch.randn(batch, channels, height, width, generator=generator),)
    raise ModelLoadError(
        f"{path}: cannot build the example input {main} of {what}: accelc builds input_ids (text) and pixel_values "
        "(vision) from the config; write a model.py whose get_model() loads the folder and whose get_inputs() "
        f"returns {main}"
    )


def _seq_length(config, seq: int | None, path: str) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if seq is None:
        return min(DEFAULT_SEQ, limit) if limit else DEFAULT_SEQ
    if limit and seq > limit:
        raise UserInputError(f"--seq {seq} is longer than the model's max_position_embeddings ({limit}) in "
                             f"{os.path.join(path, CONFIG_FILE)}; give --seq {limit} or less")
    return seq


def _import_transformers(path: str):
    try:
        import transformers
    except ImportError as exc:
        raise ModelLoadError(
            f"{path} is a Hugging Face model folder, and loading it needs transformers, which is not installed "
            f"({first_line(exc)}); install it with `pip install transformers`"
        ) from exc
    return transformers


def _load_config(transformers, folder: str, path: str):
    try:
        return transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{os.path.join(path, CONFIG_FILE)} is not a config transformers {transformers.__version__} can read "
            f"({first_line(exc)}); check model_type there, or upgrade transformers"
        ) from exc


def _model_class(transformers, config, path: str):
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return transformers.AutoModel, "AutoModel"
    name = architectures[0]
    try:
        model_class = getattr(transformers, name, None)
    except Exception:  # transformers' lazy module raises for a class whose backend is missing
        model_class = None
    if not (isinstance(model_class, type) and hasattr(model_class, "from_pretrained")):
        raise ModelLoadError(
            f"{os.path.join(path, CONFIG_FILE)} names the architecture {name}, which transformers "
            f"{transformers.__version__} does not have; upgrade transformers, or load the model in a model.py"
        )
    return model_class, name
