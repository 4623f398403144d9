"""Bench results and how they are shown: one :class:`SystemResult` per system, the
:class:`BenchResult` of a whole run (with its JSON round trip), the :class:`ProgressBar` the
command line draws on stderr while a run goes on, and :func:`format_table`, the terminal table.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field

from ..console import plain_grid, print_grid


@dataclass
class SystemResult:
    name: str
    status: str  # ok | failed | skipped | unavailable
    reason: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    iterations: int = 0
    throughput_per_s: float | None = None  # samples per second at the batch size
    build_s: float | None = None
    memory: dict = field(default_factory=dict)
    max_abs_error: float | None = None
    max_rel_error: float | None = None  # max abs error / max(1, max |eager|) (accelc.verify)
    relative_error: float | None = None  # max abs error / max |eager|, the worst output's
    within_tolerance: bool | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchResult:
    model: str
    device: str
    precision: str
    batch_size: int
    threads: int
    seconds: float
    input_shapes: list
    versions: dict
    machine: dict
    systems: list[SystemResult]
    memory_kind: str = "rss_growth"
    notes: list[str] = field(default_factory=list)

    def entry(self, name: str) -> SystemResult | None:
        return next((s for s in self.systems if s.name == name), None)

    def speedup(self, name: str, over: str = "eager") -> float | None:
        a, b = self.entry(name), self.entry(over)
        if a is None or b is None or not a.ok or not b.ok or not a.median_ms:
            return None
        return b.median_ms / a.median_ms

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        # Strict JSON: a NaN or infinity anywhere becomes null (json.dumps never hands floats
        # to ``default``, so they are replaced beforehand); other odd values become strings.
        return json.dumps(_finite_floats(self.to_dict()), indent=indent, allow_nan=False, default=str)

    @classmethod
    def from_dict(cls, data: dict) -> "BenchResult":
        """Load ``to_dict``'s output; fields this version does not know (from a newer one) are dropped."""
        data = dict(data)
        system_fields = set(SystemResult.__dataclass_fields__)
        data["systems"] = [SystemResult(**{k: v for k, v in s.items() if k in system_fields})
                           for s in data.get("systems", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite_floats(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_floats(v) for v in value]
    return value


class ProgressBar:
    """The bench's progress on stderr: a ``rich`` bar on a terminal, a line per step otherwise."""

    def __init__(self, stream=None, prefix: str = ""):
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._last_step = None

    def __call__(self, message: str, fraction: float) -> None:
        fraction = min(1.0, max(0.0, fraction))
        if self.tty:
            if self._bar is None:
                from rich.console import Console
                from rich.markup import escape
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._bar = Progress(TextColumn(escape(self.prefix)), BarColumn(), TextColumn("{task.percentage:3.0f}%"),
                                     TimeElapsedColumn(), TextColumn("{task.description}"),
                                     console=Console(file=self.stream), transient=True)
                self._bar.start()
                self._task = self._bar.add_task(message, total=1.0)
            self._bar.update(self._task, completed=fraction, description=message)
            return
        step = message.split(" round ")[0]  # one line per step, not per timing round
        if step != self._last_step:
            self.stream.write(f"{self.prefix}{fraction * 100:3.0f}% {message}\n")
            self.stream.flush()
            self._last_step = step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def format_table(result: BenchResult) -> str:
    """The table as plain text (a pipe, a log, a file): one row per system, then the notes."""
    header, rows = system_rows(result)
    return "\n".join([table_title(result), plain_grid(header, rows, RIGHT_ALIGNED)] + table_notes(result))


def print_table(result: BenchResult) -> None:
    """The table on stdout: drawn by ``rich`` on a terminal, plain text otherwise."""
    header, rows = system_rows(result)
    print(table_title(result))
    print_grid(header, rows, RIGHT_ALIGNED)
    print("\n".join(table_notes(result)))


RIGHT_ALIGNED = {1, 2, 3, 4, 5, 6, 7, 8}


def table_title(result: BenchResult) -> str:
    shapes = ", ".join(f"{d}{tuple(s)}" for d, s in result.input_shapes)
    return (f"{result.model} on {result.device} ({result.precision}), batch {result.batch_size}, "
            f"{result.threads} threads, inputs {shapes}")


def system_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """The header and one row of cells per system."""
    eager = result.entry("eager")
    header = ["system", "median ms", "p90 ms", "min-max ms", "samples/s", "vs eager", "build s", "mem MB", "max err", ""]
    rows = []
    for s in result.systems:
        if not s.ok:
            rows.append([s.name, s.status, "", "", "", "", "", "", "", ""])
            continue
        speed = result.speedup(s.name) if eager is not None and eager.ok else None
        mem = s.memory.get("retained_mb")
        peak = s.memory.get("build_peak_mb")
        mem_text = "" if mem is None else f"{mem:.0f}" + (f" (peak {peak:.0f})" if peak is not None else "")
        flag = "" if s.within_tolerance else "out of tolerance"
        rows.append([
            s.name, f"{s.median_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.min_ms:.3f}-{s.max_ms:.3f}",
            f"{s.throughput_per_s:,.1f}" if s.throughput_per_s else "", f"{speed:.2f}x" if speed else "",
            f"{s.build_s:.1f}", mem_text, f"{s.max_abs_error:.2g}" if s.max_abs_error is not None else "", flag,
        ])
    return header, rows


def table_notes(result: BenchResult) -> list[str]:
    """What follows the table: why a system has no numbers, notes, what the columns mean."""
    out = []
    reasons = [f"  {s.name}: {s.status}: {s.reason}" for s in result.systems if not s.ok]
    notes = [f"  {s.name}: {s.note}" for s in result.systems if s.ok and s.note]
    if reasons:
        out += ["", "not measured:"] + reasons
    if notes:
        out += ["", "notes:"] + notes
    mem_kind = {"rss_growth": "RSS growth while built (peak while building)",
                "rss_retained_only": "RSS growth while built (peak unavailable on this OS)",
                "cuda_allocated_growth": "CUDA memory allocated by torch (peak while building)"}[result.memory_kind]
    out += ["", f"mem MB: {mem_kind}; max err: largest |output - eager fp32| over the example and its seeded variants"]
    out += [f"{n}" for n in result.notes]
    return out
