"""Weight-only quantized Linear: int8 or int4 weights with one scale per group of ``group_size`` input columns.

int4 runs on torch's int4 CPU matmul (``aten._weight_int4pack_mm_for_cpu``, bfloat16 activations) where the
shape allows it (groups of 32-256 dividing an input width that is a multiple of 128): the weight stays 4-bit,
with the kernel's repacked copy beside it. ``fxq bench --dynamic`` times a decode step's 2048x5632 layers against
fp32, dynamic int8 and weight-only int8. The int8 path, and int4 where the kernel does not apply, expand the
weight to float per call: they save memory and disk (4x for int8, about 7x for int4 with groups of 128), not
time (for int8 speed, use dynamic int8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn.quantized.kernel_state import RebuildsKernelState

INT4_KERNEL_GROUPS, INT4_INNER_K_TILES = (32, 64, 128, 256), 8


class WeightOnlyLinear(RebuildsKernelState):
    """``nn.Linear`` with a symmetric ``bits``-bit weight (8 or 4) and float32 scales per (row, group); int4 on
    the int4 kernel where it applies (``uses_int4_kernel``)."""

    _fxq_leaf = True
    fxq_concept = "linear"
    _kernel_state = ("_int4_kernel",)

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
        self._repack()

    def _repack(self) -> None:
        """The int4 kernel's packed weight and (scale, zero) table, or None where the kernel does not apply."""
        self._int4_kernel = None
        if self.bits != 4 or self.group_size not in INT4_KERNEL_GROUPS or self.in_features % self.group_size \
                or self.in_features % (INT4_INNER_K_TILES * 16):
            return
        levels = (_unpack_int4(self.qweight)[:, : self.in_features].to(torch.int32) + 8).contiguous()
        scales = self.scale.t().to(torch.bfloat16)
        table = torch.stack([scales, torch.zeros_like(scales)], dim=2).contiguous()  # [groups, out, (scale, zero)]
        self._int4_kernel = (torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels, INT4_INNER_K_TILES), table)

    @property
    def uses_int4_kernel(self) -> bool:
        return self._int4_kernel is not None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._repack()  # the kernel's copy of the weight follows the loaded one

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
        if self._int4_kernel is None:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight().to(x.dtype), bias)
        packed, table = self._int4_kernel
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, self.group_size, table).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        compute = "int4 kernel, bfloat16 activations" if self.uses_int4_kernel else "float (weight expanded per call)"
        return (f"in_features={self.in_features}, out_features={self.out_features}, weight=int{self.bits} "
                f"symmetric, group_size={self.group_size}, compute={compute}")


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Two int4 values per byte (low nibble first), each stored with an offset of 8."""
    nibbles = (values + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def _unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low, high = (packed & 0x0F).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)
