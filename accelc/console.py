"""What the command line shows while it works and when it is done, drawn with ``rich``.

On a terminal: one live status line (a spinner, the elapsed time and the current step) that is
cleared when the step list ends, and tables with warnings in colour. When stderr/stdout is not a
terminal (a pipe, a CI log, a file): one plain ``[  1.2s] step`` line per step and plain
``key  value`` tables, with no escape codes and no wrapping, so the output greps and diffs well.
"""

from __future__ import annotations

import re
import sys
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Row labels drawn in colour on a terminal: what the user must not miss.
ROW_STYLES = {"warning": "bold yellow", "fallback": "bold yellow", "rolled back": "bold red"}


# The pass managers' per-pass steps: worth a glance on the live line, noise in a log of lines.
_PER_PASS_STEP = re.compile(r"^(\w+ pass \d+/\d+: |verifying (?!the ))")


class Progress:
    """Step messages on stderr with the elapsed time: a live spinner line on a terminal, one
    line per step otherwise. Call it with each step's message; ``done()`` clears the live line."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.start = time.perf_counter()
        self.console = Console(file=sys.stderr, highlight=False)
        self.tty = self.console.is_terminal
        self._status = None

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.perf_counter() - self.start:6.1f}s] {message}"
        if not self.tty:
            if _PER_PASS_STEP.match(message):
                return
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        elif self._status is None:
            self._status = self.console.status(Text(line), spinner="dots")
            self._status.start()
        else:
            self._status.update(Text(line))

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def print_rows(rows: list[tuple[str, str]], file=None) -> None:
    """A two-column ``label  value`` table; labels in ``ROW_STYLES`` are coloured on a terminal."""
    console = Console(file=file or sys.stdout, highlight=False)
    if not console.is_terminal:
        console.file.write(plain_rows(rows) + "\n")
        return
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        style = ROW_STYLES.get(label)
        table.add_row(Text(label, style=style or "bold"), Text(value, style=style or ""))
    console.print(table)


def plain_rows(rows: list[tuple[str, str]]) -> str:
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def print_grid(header: list[str], rows: list[list[str]], right: set[int], file=None) -> None:
    """A table with a header row (the bench's systems); columns in ``right`` are right-aligned."""
    console = Console(file=file or sys.stdout, highlight=False)
    if not console.is_terminal:
        console.file.write(plain_grid(header, rows, right) + "\n")
        return
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def plain_grid(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
