"""Find the user's own source line in a traceback or an fx node, for error messages and reports."""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from types import TracebackType

_LIBRARY_ROOTS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sysconfig.get_paths()["stdlib"]}
)
_ACCELC_ROOT = os.path.realpath(os.path.dirname(os.path.dirname(__file__)))


def is_user_file(filename: str) -> bool:
    """True for files that belong to the user rather than to Python, torch or accelc."""
    if not filename or filename.startswith("<"):
        return False
    real = os.path.realpath(filename)
    if real.startswith(_LIBRARY_ROOTS) or "site-packages" in real or "dist-packages" in real:
        return False
    return not real.startswith(os.path.join(_ACCELC_ROOT, "accelc") + os.sep)


def user_frame(tb: TracebackType | None, prefer: str | None = None) -> str | None:
    """``file:line`` of the innermost frame in the user's code (``prefer`` wins if it appears)."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    if prefer:
        prefer_real = os.path.realpath(prefer)
        chosen = [f for f in frames if os.path.realpath(f.filename) == prefer_real]
        if chosen:
            return _fmt(chosen[-1].filename, chosen[-1].lineno)
    chosen = [f for f in frames if is_user_file(f.filename)]
    return _fmt(chosen[-1].filename, chosen[-1].lineno) if chosen else None


_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')


def user_line_in_text(text: str, prefer: str | None = None) -> str | None:
    """The last user ``file:line`` mentioned in a message (torch.export quotes user frames in its errors)."""
    hits = [(f, int(n)) for f, n in _FILE_LINE.findall(text or "") if is_user_file(f)]
    if prefer:
        preferred = [h for h in hits if os.path.realpath(h[0]) == os.path.realpath(prefer)]
        hits = preferred or hits
    return _fmt(*hits[-1]) if hits else None


def exception_location(exc: BaseException, prefer: str | None = None) -> str | None:
    """Best user location for an exception: its traceback, then its chained causes, then its text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        where = user_frame(current.__traceback__, prefer) or user_line_in_text(str(current), prefer)
        if where:
            return where
        current = current.__cause__ or current.__context__
    return None


def node_location(node) -> str | None:
    """The innermost user ``file:line`` recorded in an fx node's stack trace, if any."""
    return user_line_in_text(node.meta.get("stack_trace", "") or "")


def first_line(exc: BaseException) -> str:
    """A one-line summary of an exception: its type and the first non-empty line of its message."""
    for line in str(exc).splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"
    return type(exc).__name__


def _fmt(filename: str, lineno: int | None) -> str:
    try:
        shown = os.path.relpath(filename)
    except ValueError:
        shown = filename
    if shown.startswith(".." + os.sep + ".."):
        shown = filename
    return f"{shown}:{lineno}"


__all__ = ["is_user_file", "user_frame", "user_line_in_text", "exception_location", "node_location", "first_line"]


def quoted_line(location: str | None) -> str | None:
    """The source text at ``location`` ("path:line", as :func:`exception_location` writes it), stripped."""
    import linecache

    if not location or ":" not in location:
        return None
    path, _, line = location.rpartition(":")
    if not line.isdigit():
        return None
    text = linecache.getline(os.path.abspath(path), int(line)).strip()
    return text or None

