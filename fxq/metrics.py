"""How far a quantized output is from the float one, in the units the reports and benchmarks print."""

from __future__ import annotations

import math

import torch


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(||reference|| / ||reference - test||); inf if equal."""
    reference, test = reference.detach().float(), test.detach().float()
    noise = (reference - test).norm()
    return math.inf if noise == 0 else (20 * torch.log10(reference.norm() / noise)).item()
