"""What the bench measures of the process around the systems: RSS and peak-RSS readings from
``/proc/self`` and :class:`MemoryProbe`, which turns them (or torch's CUDA allocator counters)
into growth while a system is built and run; and :class:`OtherLoad`, which tells whether other
processes took CPU time while the systems were timed.
"""

from __future__ import annotations

import ctypes
import gc
import os
import time

import torch


_MB = 1024.0 * 1024.0


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS so RSS baselines mean something."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Growth of RSS (CPU) or of torch's CUDA allocations between ``start`` and the readings."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.can_reset = _reset_peak_rss() and _proc_status_kb("VmHWM") is not None
        self._rss0 = self._alloc0 = self._free0 = 0

    def start(self) -> None:
        _release_freed_memory()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._alloc0 = torch.cuda.memory_allocated()
            self._free0 = torch.cuda.mem_get_info()[0]
        if self.can_reset:
            _reset_peak_rss()
        self._rss0 = (_proc_status_kb("VmRSS") or 0) * 1024

    def peak_mb(self) -> float | None:
        if self.cuda:
            torch.cuda.synchronize()
            return round((torch.cuda.max_memory_allocated() - self._alloc0) / _MB, 1)
        if not self.can_reset:
            return None
        return round(((_proc_status_kb("VmHWM") or 0) * 1024 - self._rss0) / _MB, 1)

    def retained_mb(self) -> float:
        _release_freed_memory()
        if self.cuda:
            return round((torch.cuda.memory_allocated() - self._alloc0) / _MB, 1)
        return round(((_proc_status_kb("VmRSS") or 0) * 1024 - self._rss0) / _MB, 1)

    def device_used_mb(self) -> float | None:
        if not self.cuda:
            return None
        return round((self._free0 - torch.cuda.mem_get_info()[0]) / _MB, 1)


class OtherLoad:
    """CPU time other processes used while we timed, from /proc/stat minus this process's own.

    The load average cannot tell: it counts this benchmark's own threads and the build that ran
    before the timing. What matters is whether anything else took cores during the timed rounds.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def note(self) -> str:
        end = self._sample()
        if self.start is None or end is None:
            return ""
        wall = end[2] - self.start[2]
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        cores = os.cpu_count() or 1
        if wall <= 0 or other / wall < 0.25:  # other processes kept less than a quarter core busy
            return ""
        return (f"warning: other processes used {other / wall:.1f} of {cores} cores while this was timed; "
                "multi-threaded kernels stall when their threads are descheduled, so latencies are unreliable")
