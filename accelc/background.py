"""Work on a thread of its own while the build goes on, its result or its exception handed back.

What accelc runs this way is C++ that releases the GIL: ONNX Runtime opening a session,
OpenVINO reading and compiling a model, writing a model file. On a machine with a second core it
then overlaps the build's Python work (passes, checks) instead of queueing behind it.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``work()`` started on a thread (at once, on the caller's, when ``on_thread`` is False);
    :meth:`result` waits for it and returns what it returned, or raises what it raised."""

    def __init__(self, work: Callable[[], T], name: str, on_thread: bool = True):
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        if on_thread:
            self._thread.start()
        else:
            self._run(work)

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # raised to whoever asks for the result
            self._error = exc

    def result(self) -> T:
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


__all__ = ["Background"]
