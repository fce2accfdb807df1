"""The int8 group norm, routed around the shapes torch's kernel gets wrong."""

from __future__ import annotations

import torch


def group_norm(x: torch.Tensor, num_groups: int, weight, bias, eps: float, scale: float, zero_point: int):
    """``torch.ops.quantized.group_norm``, except that a 4-d input with a 1x1 spatial size runs as (N, C, 1).

    Measured on torch 2.13 (x86 and qnnpack engines alike): on (N, C, 1, 1) inputs with N > 1 the kernel returns
    values up to the whole int8 range away from the float result, differently on every call; the same values
    as a 3-d tensor come out right, as do every other shape tried. Such inputs are common: a group norm after
    global pooling. The check is two integer reads per call.
    """
    if x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1:
        out = torch.ops.quantized.group_norm(x.flatten(2), num_groups, weight, bias, eps, scale, zero_point)
        return out.unsqueeze(3)
    return torch.ops.quantized.group_norm(x, num_groups, weight, bias, eps, scale, zero_point)
