"""Timing several ways of computing the same thing against each other, in one process.

Rounds alternate between the variants (in a new seeded random order each round) so slow drifts of the machine hit
all alike, and no variant always follows the same one (a rotation keeps the neighbours: measured, one of two
identical TorchScript copies of MobileNetV2 read 8% slower than the other from where it sat in the order). Inside a
round each variant runs once untimed before its timed call: otherwise a variant is timed with the caches the
previous variant left behind, and whichever one more often follows the big fp32 model looks slower. Used by
``fxq bench``, ``fxq.benchmark`` and the runtime choice (``fxq.runtime``). Every printed timing comes with
``cpu_flags_line()``: the same code can run 2x apart on two CPUs.

Peers with thread pools of their own (ONNX Runtime) need ``settle_s``: each pool spins for a while after a call
returns, so whichever variant runs next shares the cores with spinning threads. Measured on the digits CNN, 2
threads: without a pause torch fp32 read 25.9 ms and ONNX Runtime fp32 6.1 ms, with 50 ms of sleep before each
variant 12.7 and 2.7 ms; a variant's own untimed call still warms it right before its timed one.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch

from fxq import cpu


def time_interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int,
                     settle_s: float = 0.0) -> dict[str, float]:
    """Median milliseconds per call for each variant (see the module docstring); ``settle_s`` seconds of sleep
    before each variant's pair of calls."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with torch.no_grad():
        for _ in range(warmup):
            for run in variants.values():
                run()
        order = random.Random(0)
        for _ in range(rounds):
            order.shuffle(names)
            for name in names:
                time.sleep(settle_s)
                variants[name]()
                start = time.perf_counter()
                variants[name]()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def cpu_flags_line() -> str:
    """The CPU's model and int8-relevant ISA flags: x86 kernels and their speed differ with VNNI and AVX-512, and
    between vendors (fbgemm's AVX2 int8 linear is ~5x fp32 on the Intel machine this was first measured on, ~2.4x
    on an AMD EPYC)."""
    model = cpu.model_name()
    if model is None:
        return "cpu flags: unknown (no /proc/cpuinfo)"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
    return f"cpu: {model}; flags: " + " ".join(f"{flag}={'yes' if flag in cpu.flags() else 'no'}" for flag in wanted)
