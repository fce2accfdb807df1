"""A quantized model against its float model on the user's inputs: latency, size, output error and, when given,
the user's own metric, measured in one run (``fxq.benchmark``; ``fxq bench TARGET`` from the command line).

Latency is the median of interleaved rounds (``fxq.timing``) on a fixed thread count, restored afterwards; the
printed result names the CPU and its int8-relevant ISA flags, since the same code can run 2x apart on two CPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import _pytree as pytree

from fxq.errors import ConfigError
from fxq.metrics import sqnr_db
from fxq.model_inputs import call_with
from fxq.report import serialized_size
from fxq.timing import cpu_flags_line, time_interleaved


@dataclass(frozen=True)
class BenchmarkResult:
    """One comparison: milliseconds per call, bytes of ``torch.save(state_dict)``, SQNR of the outputs (all float
    tensors in them, flattened), and the metric's value for each model (None without a metric)."""

    float_ms: float
    quantized_ms: float
    float_bytes: int
    quantized_bytes: int
    sqnr_db: float
    float_metric: float | None
    quantized_metric: float | None
    threads: int
    rounds: int
    cpu: str

    @property
    def speedup(self) -> float:
        return self.float_ms / self.quantized_ms

    @property
    def size_ratio(self) -> float:
        return self.quantized_bytes / self.float_bytes

    def __str__(self) -> str:
        from tabulate import tabulate

        speed = f"{self.speedup:.2f}x faster" if self.speedup >= 1 else f"{1 / self.speedup:.2f}x slower"
        rows = [["latency ms", f"{self.float_ms:.3f}", f"{self.quantized_ms:.3f}", speed],
                ["size bytes", f"{self.float_bytes:,}", f"{self.quantized_bytes:,}", f"{self.size_ratio:.3f}x"],
                ["output SQNR dB", "-", f"{self.sqnr_db:.1f}", ""]]
        if self.float_metric is not None:
            rows.append(["metric", f"{self.float_metric:.4f}", f"{self.quantized_metric:.4f}",
                         f"{self.quantized_metric - self.float_metric:+.4f}"])
        table = tabulate(rows, headers=["", "float", "quantized", ""], disable_numparse=True)
        return f"{self.cpu}\n{self.threads} threads, median of {self.rounds} interleaved rounds\n{table}"


def benchmark(model: nn.Module, quantized: nn.Module, inputs, *, metric: Callable[[nn.Module], float] | None = None,
              threads: int = 2, rounds: int = 20, warmup: int = 3) -> BenchmarkResult:
    """``quantized`` against ``model`` on ``inputs`` (a tuple of arguments, one tensor, or a dict of keyword
    arguments). ``metric(model) -> float`` (e.g. accuracy on the user's data) is evaluated on both.

    Raises:
        ConfigError: a thread or round count below 1, or outputs without float tensors to compare.
    """
    if threads < 1 or rounds < 1:
        raise ConfigError(f"benchmark needs threads >= 1 and rounds >= 1, got threads={threads}, rounds={rounds}")
    with torch.no_grad():
        expected, got = _flat(call_with(model, inputs)), _flat(call_with(quantized, inputs))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = time_interleaved({"float": lambda: call_with(model, inputs),
                                  "quantized": lambda: call_with(quantized, inputs)}, rounds, warmup)
    finally:
        torch.set_num_threads(previous)
    scores = (metric(model), metric(quantized)) if metric is not None else (None, None)
    return BenchmarkResult(times["float"], times["quantized"], serialized_size(model), serialized_size(quantized),
                           sqnr_db(expected, got), *scores, threads=threads, rounds=rounds, cpu=cpu_flags_line())


def _flat(output) -> torch.Tensor:
    leaves = [leaf.detach().float().reshape(-1) for leaf in pytree.tree_leaves(output)
              if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()]
    if not leaves:
        raise ConfigError("benchmark compares the models' float outputs, and these outputs hold no float tensor")
    return torch.cat(leaves)
