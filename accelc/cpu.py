"""What this CPU's instruction set offers, read once from Linux's /proc/cpuinfo.

accelc asks two questions of it: whether bf16 matmuls run natively (avx512_bf16 or AMX) rather
than emulated, and whether int8 dot products have VNNI. Without VNNI, ONNX Runtime's x86 int8
kernel multiplies uint8 activations by int8 weights with ``vpmaddubsw``, whose int16 pair sums
saturate once |w| reaches 128·255/2 ≈ 2⁷: full-range int8 weights then give wrong answers (a 23%
error on GPT-2), 7-bit weights (``reduce_range``) do not.
"""

from __future__ import annotations

import functools
import platform


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags, or None where /proc/cpuinfo cannot say (another OS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU advertises bf16 dot-product instructions (True where unknown: no warning on a guess)."""
    flags = cpu_flags()
    return flags is None or bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot_products() -> bool:
    """Whether int8 matmuls on this CPU are free of the uint8×int8 pair-sum saturation (VNNI, AMX or not x86)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True  # Arm's sdot/udot and others accumulate in 32 bits
    flags = cpu_flags()
    return flags is None or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
