"""Timing several ways of computing the same thing against each other, in one process.

Rounds alternate between the variants (rotating their order) so slow drifts of the machine hit all alike. Inside a
round each variant runs once untimed before its timed call: otherwise a variant is timed with the caches the
previous variant left behind, and whichever one more often follows the big fp32 model looks slower. Used by
``fxq bench`` and by the runtime choice (``fxq.runtime``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call for each variant (see the module docstring)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with torch.no_grad():
        for _ in range(warmup):
            for run in variants.values():
                run()
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                variants[name]()
                start = time.perf_counter()
                variants[name]()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}
