"""Latency measurement: warm-up, time-based repetition, interleaved rounds, medians and spread.

Systems compared in one report are timed in alternating rounds in the same process, so a noisy
neighbour slows all of them alike instead of whichever happened to run at the wrong moment.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    iterations: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
) -> dict[str, Timing]:
    """Median latency of each callable, timed round-robin on rotating inputs for about ``seconds``."""
    samples: dict[str, list[float]] = {name: [] for name in systems}
    with torch.inference_mode():
        for fn in systems.values():
            for i in range(warmup):
                fn(*input_sets[i % len(input_sets)])
        _sync(device)
        deadline = time.perf_counter() + seconds
        i = 0
        while i < max_iterations and (i < min_iterations or time.perf_counter() < deadline):
            inputs = input_sets[i % len(input_sets)]
            for name, fn in systems.items():
                start = time.perf_counter()
                fn(*inputs)
                _sync(device)
                samples[name].append(time.perf_counter() - start)
            i += 1
    return {name: _summarise(s) for name, s in samples.items()}
