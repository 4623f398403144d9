"""Latency measurement: warm-up, time-based repetition, interleaved rounds, medians and spread.

Systems compared in one report are timed in alternating rounds in the same process, so a noisy
neighbour slows all of them alike instead of whichever happened to run at the wrong moment.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# Two medians from separate measurements differ by a few percent on a shared machine: one is
# called slower than the other (a warning, a red bar in report.html) only past this factor.
SLOWER_MARGIN = 1.05


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    iterations: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@contextmanager
def build_phase(report: dict, name: str):
    """Add the wall time of the ``with`` block to ``report["build_seconds"][name]``: where a
    build's time went (capture, eager references, each stage, each runtime's build and check,
    the timing that chooses). Phases do not nest; their sum is the build minus glue."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases = report.setdefault("build_seconds", {})
        phases[name] = round(phases.get(name, 0.0) + time.perf_counter() - start, 3)


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _summarise(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Timing(statistics.median(ordered) * 1e3, p90 * 1e3, ordered[0] * 1e3, ordered[-1] * 1e3, len(ordered))


def compare_latency(
    systems: dict[str, Callable[..., object]],
    input_sets: list[tuple],
    seconds: float = 2.0,
    warmup: int = 2,
    min_iterations: int = 5,
    max_iterations: int = 200,
    device: torch.device | str | None = None,
    stop_when_clear: bool = False,
) -> dict[str, Timing]:
    """Median latency of each callable, timed in turns on rotating inputs for about ``seconds``.

    Turns of ~50 ms rather than single calls: ONNX Runtime's and OpenMP's worker threads spin for
    a while after a call, and would otherwise be charged to whichever system runs next.
    ``stop_when_clear``: stop after ``min_iterations`` rounds once one system is clearly the
    fastest (:func:`clear_winner`), for a choice rather than a measurement to quote.
    """
    return measure_interleaved(systems, input_sets, seconds, warmup, min_iterations, max_iterations, device,
                               turn_seconds=0.05, settle_seconds=0.03, stop_when_clear=stop_when_clear)


def measure_interleaved(
    systems: dict[str, Callable[..., object]],
    input_sets: list[tuple],
    seconds: float = 2.0,
    warmup: int = 2,
    min_iterations: int = 5,
    max_iterations: int = 200,
    device: torch.device | str | None = None,
    on_progress: Callable[[str, float], None] | None = None,
    turn_seconds: float = 0.0,
    settle_seconds: float = 0.0,
    stop_when_clear: bool = False,
) -> dict[str, Timing]:
    """Warm every system up, then time them in interleaved rounds until ``seconds`` have passed.

    Each round runs every system once on the same input set (the sets rotate from round to
    round), and the system that goes first rotates too, so none always runs on caches warmed
    by the same neighbour. Each timed call ends with a device synchronisation, so asynchronous
    CUDA work is charged to the system that queued it. ``on_progress(message, fraction)`` hears
    about warm-up and timing.

    With ``turn_seconds`` > 0 each system keeps the CPU for a turn of about that long and the
    first call of every turn is not counted (see :func:`_time_turn`): runtimes whose worker threads
    spin after a call (ONNX Runtime, OpenMP) would otherwise steal the cores from whichever
    system runs next, which measures the interleaving rather than the system. ``settle_seconds``
    of idle time before each turn (not timed) let the previous system's threads go back to sleep.
    """
    progress = on_progress or (lambda message, fraction: None)
    names = list(systems)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for k, name in enumerate(names):
            progress(f"warming up {name}", k / max(1, len(names)) * 0.1)
            for i in range(warmup):
                systems[name](*input_sets[i % len(input_sets)])
            _sync(device)
        start_all = time.perf_counter()
        deadline = start_all + seconds
        i = 0
        while i < max_iterations and (i < min_iterations or time.perf_counter() < deadline):
            inputs = input_sets[i % len(input_sets)]
            for j in range(len(names)):
                name = names[(i + j) % len(names)]
                if turn_seconds > 0:
                    if settle_seconds > 0:
                        time.sleep(settle_seconds)
                    _time_turn(systems[name], inputs, device, turn_seconds, samples[name])
                    continue
                start = time.perf_counter()
                systems[name](*inputs)
                _sync(device)
                samples[name].append(time.perf_counter() - start)
            i += 1
            if stop_when_clear and i >= min_iterations and clear_winner(samples):
                break
            done = max(i / max(1, min_iterations) if i < min_iterations else 0.0,
                       (time.perf_counter() - start_all) / seconds if seconds > 0 else 1.0)
            progress(f"timing round {i}", 0.1 + 0.9 * min(1.0, done))
    return {name: _summarise(s) for name, s in samples.items()}


# A winner is clear when its median is this much below every other system's and its slowest
# quarter of calls is faster than every other system's fastest quarter.
CLEAR_RATIO = 1.25


def clear_winner(samples: dict[str, list[float]]) -> str | None:
    """The system whose calls are clearly the fastest (:data:`CLEAR_RATIO`), or None."""
    if len(samples) < 2 or any(len(s) < 2 for s in samples.values()):
        return None
    quartiles = {name: statistics.quantiles(s, n=4) for name, s in samples.items()}
    best = min(quartiles, key=lambda name: quartiles[name][1])
    for name, (low, median, _) in quartiles.items():
        if name != best and not (median >= CLEAR_RATIO * quartiles[best][1] and low > quartiles[best][2]):
            return None
    return best


def _time_turn(fn: Callable[..., object], inputs: tuple, device, turn_seconds: float, out: list[float]) -> None:
    """One turn: a call to take the cores back, then timed calls for ``turn_seconds``.

    The first call is counted only when it alone outlasts the turn: for a call that long, the
    few milliseconds a previous system's spinning threads can cost are within the noise, and
    repeating it would double the run time of large models.
    """
    start = time.perf_counter()
    fn(*inputs)
    _sync(device)
    first = time.perf_counter() - start
    if first >= turn_seconds:
        out.append(first)
        return
    turn_end = time.perf_counter() + turn_seconds
    while True:
        start = time.perf_counter()
        fn(*inputs)
        _sync(device)
        now = time.perf_counter()
        out.append(now - start)
        if now >= turn_end:
            break
