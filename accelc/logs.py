"""Third-party log noise, captured: kept for the log file, summarised in one line, shown with --verbose.

torch, the ONNX exporter, onnxscript and transformers log (and warn) freely while accelc works:
a "torchvision is not installed" line per ONNX export, a fake-tensor traceback the exporter
recovers from. None of it is the user's business unless something fails, and on a terminal it
glues onto the progress line. :class:`CapturedLogs` routes every log record (torch's own
loggers too, which do not propagate to the root) and every Python warning into a list while a
command runs; the command writes them to ``accelc.log`` in the artifact folder and prints one
line saying how many there were.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Loggers that print through their own handlers instead of the root's.
_SELF_PRINTING = ("torch", "onnxscript", "onnx_ir", "transformers")


def _self_printing_loggers() -> list[logging.Logger]:
    """The top loggers of ``_SELF_PRINTING`` and every child that prints on its own: torch's log
    registry gives ``torch.onnx``, ``torch.export`` and others their own stderr handler with
    ``propagate=False`` when torch is imported."""
    loggers = [logging.getLogger(name) for name in _SELF_PRINTING]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (isinstance(logger, logging.Logger) and name.split(".")[0] in _SELF_PRINTING and name not in _SELF_PRINTING
                and (logger.handlers or not logger.propagate)):
            loggers.append(logger)
    return loggers


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]):
        super().__init__(logging.DEBUG)
        self.records = records
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not worth failing a build for
            pass


class CapturedLogs:
    """While active: log records at ``level`` and above, from any logger, and Python warnings go
    to :attr:`lines` instead of the terminal. accelc's own logger (``accelc.*``) keeps printing
    where the root logger prints: its warnings are meant for the user."""

    def __init__(self, level: int = logging.INFO, echo: bool = False):
        self.level = level
        self.echo = echo  # --verbose: everything still prints, and is kept for the log file too
        self.lines: list[str] = []
        self._saved: list = []
        self._taken: set[str] = set()

    def __enter__(self) -> "CapturedLogs":
        global _active
        _active = self
        handler = _ListHandler(self.lines)
        root = logging.getLogger()
        self._saved = [(root, list(root.handlers), root.level, root.propagate)]
        if self.echo:
            root.addHandler(handler)
            self._handler = handler
            self.take_over_new_loggers()
            self._start_keeping_warnings(show=True)
            return self
        accelc_logger = logging.getLogger("accelc")
        self._saved.append((accelc_logger, list(accelc_logger.handlers), accelc_logger.level, accelc_logger.propagate))
        # accelc's own messages print as before (at the level the terminal had) and go to the file.
        printer = logging.StreamHandler(sys.stderr)
        printer.setFormatter(root.handlers[0].formatter if root.handlers else None)
        printer.setLevel(root.level)
        accelc_logger.handlers = [printer, handler]
        accelc_logger.setLevel(min(self.level, root.level))
        accelc_logger.propagate = False
        root.handlers = [handler]
        root.setLevel(self.level)
        self._handler = handler
        self.take_over_new_loggers()
        self._start_keeping_warnings(show=False)
        return self

    def take_over_new_loggers(self) -> None:
        """Route the self-printing loggers (see ``_self_printing_loggers``) into the capture.

        Called on entry, and again through :func:`take_over_new_loggers` after code that may set
        up its own logging: transformers gives its logger a stderr handler when it is first
        imported, which happens while a command runs (a model file or a model folder)."""
        for logger in _self_printing_loggers():
            if self.echo:
                ours = logger.propagate or self._handler in logger.handlers
            else:
                ours = not logger.handlers and logger.propagate
            if logger.name in self._taken and ours:
                continue  # still as this capture left it
            self._taken.add(logger.name)
            self._saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
            if self.echo:  # the logger keeps printing; the file gets a copy
                if not logger.propagate:
                    logger.addHandler(self._handler)
            else:
                logger.handlers = []
                logger.propagate = True

    def _start_keeping_warnings(self, show: bool) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()  # restores the filters and showwarning on exit
        warnings.simplefilter("always")
        printing = warnings.showwarning

        def keep(message, category, filename, lineno, file=None, line=None):
            self.lines.append(f"WARNING {category.__name__} ({filename}:{lineno}): {message}")
            if show:
                printing(message, category, filename, lineno, file, line)

        warnings.showwarning = keep

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        self._warnings.__exit__(*exc)
        # In order: a logger a library set up while the capture ran is saved again after its first
        # entry, and gets the library's set-up back.
        for logger, handlers, level, propagate in self._saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate

    def summary(self, where: str | None) -> str | None:
        """One line for the terminal, or None when nothing was captured (or all of it was shown)."""
        if not self.lines or self.echo:
            return None
        at = f" (in {where}; --verbose shows them)" if where else " (--verbose shows them)"
        return f"accelc: {len(self.lines)} messages from torch and other libraries hidden{at}"

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.lines) + ("\n" if self.lines else ""))


_active: CapturedLogs | None = None


def take_over_new_loggers() -> None:
    """Have the running capture (if any) take over loggers set up since it started."""
    if _active is not None:
        _active.take_over_new_loggers()


__all__ = ["CapturedLogs", "take_over_new_loggers"]
