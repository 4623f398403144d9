"""``backend="auto"``'s choices, remembered per graph and machine so that a rebuild builds one runtime.

    first build:   build PyTorch, ONNX Runtime, OpenVINO ─► time them ─► keep the fastest ─► remember it
    later builds:  key found ─► build that runtime alone ─► check it on every input set ─► keep it
                   (it fails to build or to match eager) ─► forget it, build the others, time them all

The key is what decides which runtime is fastest, and nothing that does not: the optimised
graph's code, its weights' names, shapes and dtypes (not their values), the example's shapes
and the dynamic sizes, the passes each later stage runs, the precision, the device, the thread
count, the CPU (model name and feature flags), accelc's own files and the versions of PyTorch,
ONNX Runtime and OpenVINO. Any change to one of them is a new key, so a new timing: the counterpart of
inductor's cache, which makes torch.compile's later builds of a model cheaper than its first.

A remembered choice only saves the build of the runtimes that lost; the one kept is checked
against eager on every input set as on a first build, so a stale entry costs time, never a
wrong answer. The file is ``$ACCELC_CACHE_DIR/auto-choices.json`` (default
``$XDG_CACHE_HOME/accelc`` or ``~/.cache/accelc``); ``ACCELC_CACHE_DIR=off`` turns it off. A file
that cannot be read or written is ignored: the build then times every runtime, as it would.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
import time

import torch

log = logging.getLogger(__name__)

FILE_NAME = "auto-choices.json"
MAX_ENTRIES = 256  # the oldest go first: a few KB of JSON at most
OFF = ("off", "0", "false", "no", "")


def cache_dir() -> str | None:
    """Where the choices are kept, or None when ``ACCELC_CACHE_DIR`` turns the cache off."""
    configured = os.environ.get("ACCELC_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in OFF else configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "accelc")


def choice_key(gm: torch.fx.GraphModule, inputs: tuple, device, precision: str, candidates: list[str],
               stage_passes: dict, dynamic_shapes) -> str:
    """A digest of everything that decides which runtime measures fastest (module docstring)."""
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(str(part).encode())
            digest.update(b"\0")

    add(gm.code)
    for name, tensor in (*gm.named_parameters(), *gm.named_buffers()):
        add(name, tuple(tensor.shape), tensor.dtype)
    for x in inputs:
        add(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else add(type(x).__name__, x)
    add(_spec_words(dynamic_shapes))
    for stage in sorted(stage_passes):
        add(stage, [getattr(p, "name", type(p).__name__) for p in stage_passes[stage]])
    add(precision, torch.device(device), sorted(candidates), torch.get_num_threads())
    add(*_machine())
    return digest.hexdigest()


def _spec_words(dynamic_shapes) -> str:
    if dynamic_shapes is None:
        return "static"
    return repr([{d: getattr(dim, "__name__", repr(dim)) for d, dim in (axes or {}).items()} for axes in dynamic_shapes])


def _machine() -> tuple:
    """The CPU and the library versions a timing holds for."""
    from . import __version__
    from .cpu import cpu_flags

    versions = [__version__, _source_stamp(), torch.__version__]
    for module in ("onnxruntime", "openvino"):
        try:
            versions.append(__import__(module).__version__)
        except Exception:  # not installed: it is then no candidate either
            versions.append(None)
    return (_cpu_model(), sorted(cpu_flags() or ()), platform.machine(), *versions)


@functools.cache
def _source_stamp() -> str:
    """accelc's own files, by size and modification time: a changed pass is a new key, although
    the version number is the same."""
    root = os.path.dirname(os.path.abspath(__file__))
    stamp = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                stamp.update(f"{os.path.relpath(os.path.join(folder, name), root)}:{info.st_size}:{info.st_mtime_ns};".encode())
    return stamp.hexdigest()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def recall(key: str, candidates: list[str]) -> dict | None:
    """The remembered choice for ``key`` (``{"chosen": name, "timings_ms": {...}}``), or None:
    no entry, the cache is off or unreadable, or the name is no longer a candidate."""
    entry = _read().get(key)
    if not isinstance(entry, dict) or entry.get("chosen") not in ("torch", *candidates):
        return None
    return entry


def remember(key: str, chosen: str, timings_ms: dict) -> None:
    """Keep ``chosen`` (and the timings that chose it) under ``key``; never raises."""
    folder = cache_dir()
    if folder is None:
        return
    entries = _read()
    entries[key] = {"chosen": chosen, "timings_ms": timings_ms, "saved": time.time()}
    if len(entries) > MAX_ENTRIES:
        oldest = sorted(entries, key=lambda k: entries[k].get("saved", 0) if isinstance(entries[k], dict) else 0)
        for stale in oldest[:len(entries) - MAX_ENTRIES]:
            del entries[stale]
    _write(folder, entries)


def forget(key: str) -> None:
    """Drop ``key``'s entry (its runtime failed this build); never raises."""
    folder = cache_dir()
    entries = _read()
    if folder is not None and entries.pop(key, None) is not None:
        _write(folder, entries)


def _read() -> dict:
    folder = cache_dir()
    if folder is None:
        return {}
    try:
        with open(os.path.join(folder, FILE_NAME), encoding="utf-8") as f:
            entries = json.load(f)
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(folder: str, entries: dict) -> None:
    """Write the whole file through a temporary one and a rename: a reader never sees half of it."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".auto-choices-", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                json.dump(entries, f)
            os.replace(temporary, os.path.join(folder, FILE_NAME))
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        log.debug("auto's choice not remembered: %s cannot be written", folder, exc_info=True)


__all__ = ["cache_dir", "choice_key", "recall", "remember", "forget"]
