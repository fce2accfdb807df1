"""What this machine's CPU is and which instruction sets it has: kernels differ (fxq's own int4 matmul needs AVX2
and FMA) and so do benchmark figures (the same int8 kernel can run 2x apart with and without VNNI)."""

from __future__ import annotations

import functools


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]] | None:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
    except OSError:
        return None
    flags = frozenset(next((line for line in lines if line.startswith("flags")), "").split())
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return model, flags


def flags() -> frozenset[str]:
    """The ISA flags /proc/cpuinfo lists (``avx2``, ``fma``, ``avx512_vnni``, ...); empty where it cannot be read."""
    info = _cpuinfo()
    return frozenset() if info is None else info[1]


def model_name() -> str | None:
    info = _cpuinfo()
    return None if info is None else info[0]
