"""Weight-only quantized Linear: int8 or int4 weights with one scale per group of ``group_size`` input columns,
dequantized when the layer runs.

The compute path is honest about what it is: the weight is expanded to float for each call and multiplied in
float, so this saves memory and disk (4x for int8, about 7x for int4 with groups of 128), not time. It is for
layers too large to keep in float, or where activations must not be quantized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightOnlyLinear(nn.Module):
    """``nn.Linear`` with a symmetric ``bits``-bit weight (8 or 4) and float32 scales per (row, group)."""

    _fxq_leaf = True
    fxq_concept = "linear"

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int = 128) -> None:
        super().__init__()
        if bits not in (8, 4):
            raise ValueError(f"weight-only linear supports 8 or 4 bits, not {bits}")
        if group_size < 1:
            raise ValueError(f"group_size must be positive, got {group_size}")
        self.bits, self.in_features, self.out_features = bits, linear.in_features, linear.out_features
        self.group_size = min(group_size, linear.in_features)
        weight = linear.weight.detach().float()
        columns = -(-self.in_features // self.group_size) * self.group_size  # pad the last group with zeros
        grouped = F.pad(weight, (0, columns - self.in_features)).reshape(self.out_features, -1, self.group_size)
        top = 2 ** (bits - 1) - 1
        scale = (grouped.abs().amax(dim=2, keepdim=True) / top).clamp(min=torch.finfo(torch.float32).tiny)
        values = torch.clamp(torch.round(grouped / scale), -top - 1, top).to(torch.int8).reshape(self.out_features, -1)
        self.register_buffer("scale", scale.squeeze(2))
        self.register_buffer("qweight", _pack_int4(values) if bits == 4 else values)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        values = _unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        grouped = values.float().reshape(self.out_features, -1, self.group_size) * self.scale.unsqueeze(2)
        return grouped.reshape(self.out_features, -1)[:, : self.in_features]

    @property
    def weight(self) -> torch.Tensor:
        """The float32 weight, dequantized on each access: for model code that reads ``.weight`` (its dtype,
        shape or device)."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weight=int{self.bits} "
                f"symmetric, group_size={self.group_size}, compute=float (weight expanded per call)")


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Two int4 values per byte (low nibble first), each stored with an offset of 8."""
    nibbles = (values + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def _unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low, high = (packed & 0x0F).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)
