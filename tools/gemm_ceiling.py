"""How fast this CPU multiplies in int8 and in fp32, and what that allows a model: the ``fxq bench`` rows that
say whether a latency ratio is the code's or the machine's.

A converted CNN or BERT spends most of its time in int8 convolutions and linears, so its latency against fp32
eager cannot drop below (its multiply-accumulates / the int8 kernel's rate) / (fp32 eager time). The rates come
from one large product each (fbgemm's int8 linear, torch's fp32 linear), timed interleaved in the same run as
the models. On AVX2 without VNNI, int8 products go through ``vpmaddubsw`` + ``vpmaddwd``: twice fp32's FMAs per
cycle at best (32 against 16 multiply-accumulates per core per cycle), where VNNI's ``vpdpbusd`` doubles that.
"""

from __future__ import annotations

import time

import torch
from torch import nn

# (rows, inputs, outputs): a BERT-base feed-forward product at 4 x 128 tokens, large enough to reach each
# kernel's sustained rate
SHAPE = (512, 768, 3072)


def gemm_rates(rounds: int = 30) -> dict[str, float]:
    """Multiply-accumulates per second (G) of fbgemm's int8 linear and torch's fp32 linear on ``SHAPE``, from
    each one's fastest call (a ceiling: a slow call on a shared machine must not lower it)."""
    rows, inputs, outputs = SHAPE
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(rows, inputs, generator=generator), torch.randn(outputs, inputs, generator=generator)
    qx = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
    scales = torch.full((outputs,), 0.05, dtype=torch.double)
    qweight = torch.quantize_per_channel(weight, scales, torch.zeros(outputs, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    calls = {"fp32": lambda: nn.functional.linear(x, weight),
             "int8": lambda: torch.ops.quantized.linear(qx, packed, 0.1, 128)}
    best = dict.fromkeys(calls, float("inf"))
    with torch.no_grad():
        for _ in range(rounds // 2):  # warm-up: the first calls of each run well below its rate
            for call in calls.values():
                call()
        for _ in range(rounds):
            for name, call in calls.items():  # interleaved, so a slow spell of the machine hits both
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: rows * inputs * outputs / seconds / 1e9 for name, seconds in best.items()}


def multiply_accumulates(model: nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of ``model``'s convolutions and linears on one call with ``inputs`` (what int8
    kernels would compute; attention products and the rest are left out, so the floor below is a lower bound)."""
    total = 0

    def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:  # a convolution: each output value sums in_channels / groups x kernel products
            total += output.numel() * module.weight[0].numel()

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total
