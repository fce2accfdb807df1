"""An ``nn.Linear`` around a given weight and bias: how fxq turns a functional linear call with constant
arguments (an exported graph's layers) or a transposed-weight layer into a module its kernels take."""

from __future__ import annotations

import torch
from torch import nn


def linear_from_constants(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool = False) -> nn.Linear:
    """An nn.Linear holding ``weight`` (out, in) and ``bias`` (no copy)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.detach(), requires_grad=requires_grad)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach(), requires_grad=requires_grad)
    return layer
