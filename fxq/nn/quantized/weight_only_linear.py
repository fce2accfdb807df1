"""Weight-only quantized Linear: int8 or int4 weights with one scale per group of ``group_size`` input columns.

Both run on fxq's own kernels where they build (``fxq.nn.quantized.weight_only_kernels``: x86 with AVX2;
activations rounded to 8 bits per group; int4 groups of 32-256 on inputs that pad to whole chunks of 64, int8
groups of a multiple of 32), reading the module's own ``qweight``. Elsewhere int4 runs on torch's int4 CPU
matmul (``aten._weight_int4pack_mm_for_cpu``, bfloat16 activations) where its shape rules allow (groups of
32-256 dividing an input width that is a multiple of 128, an output width that is a multiple of the kernel's
block): that kernel's packed copy is then the only copy of the weight in memory, and ``state_dict``, pickling
and ``.weight`` read the 4-bit values back out of it (``fxq.nn.quantized.int4_layout``). Where no kernel
applies the weight is expanded to float per call: memory saved, not time. ``fxq bench --dynamic`` and
``fxq bench --llm`` time them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxq.gptq import gptq_levels
from fxq.nn.quantized import int4_layout, weight_only_kernels
from fxq.nn.quantized.kernel_state import RebuildsKernelState
from fxq.observers.shrink import shrink_factors

INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # group sizes torch's int4 kernel takes
FXQ_KERNELS = {bits: f"fxq int{bits} kernel, 8-bit activations per group" for bits in (4, 8)}
TORCH_KERNEL, EXPANDED = "torch int4 kernel, bfloat16 activations", "float (weight expanded per call)"
SHRINK_CANDIDATES, SHRINK_LOWEST = 20, 0.5


class WeightOnlyLinear(RebuildsKernelState):
    """``nn.Linear`` with a symmetric ``bits``-bit weight (8 or 4) and float32 scales per (row, group), on a
    kernel where one applies (``uses_kernel``, ``compute``)."""

    _fxq_leaf = True
    fxq_concept = "linear"
    _kernel_state = ("_int4_kernel", "compute")

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int = 128,
                 input_moments: torch.Tensor | None = None) -> None:
        """``input_moments`` (in x in, the mean x x^T of the layer's inputs): round by GPTQ (``fxq.gptq``)
        instead of to the nearest level."""
        super().__init__()
        if bits not in (8, 4):
            raise ValueError(f"weight-only linear supports 8 or 4 bits, not {bits}")
        if group_size < 1:
            raise ValueError(f"group_size must be positive, got {group_size}")
        self.bits, self.in_features, self.out_features = bits, linear.in_features, linear.out_features
        self.group_size = min(group_size, linear.in_features)
        weight = linear.weight.detach().float()
        columns = -(-self.in_features // self.group_size) * self.group_size  # pad the last group with zeros
        top = 2 ** (bits - 1) - 1
        grouped = F.pad(weight, (0, columns - self.in_features)).reshape(self.out_features, -1, self.group_size)
        scale = least_error_scales(grouped, top).squeeze(2)
        if input_moments is None:
            values = torch.clamp(torch.round(grouped / scale[:, :, None]), -top - 1, top).to(torch.int8)
            values = values.reshape(self.out_features, -1)
        else:
            values = gptq_levels(weight, input_moments, scale, bits, self.group_size)
            values = F.pad(values, (0, columns - self.in_features))  # the last group's padding, as zeros
        self.register_buffer("scale", scale)
        self.register_buffer("qweight", weight_only_kernels.stored(bits, values))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self._repack()

    def _repack(self) -> None:
        """Choose the kernel (``compute``). For torch's int4 kernel: its packed weight and (scale, zero) table,
        and ``qweight`` dropped from memory where the packed form can be read back (``int4_layout.readable``)."""
        self._int4_kernel, self.compute = None, EXPANDED
        if weight_only_kernels.applies(self.bits, self.group_size, self.in_features):
            self.compute = FXQ_KERNELS[self.bits]
            return
        if self.bits != 4 or self.group_size not in INT4_KERNEL_GROUPS or self.in_features % self.group_size \
                or not int4_layout.fits(self.out_features, self.in_features):
            return
        self.compute = TORCH_KERNEL
        levels = (weight_only_kernels.levels(4, self.qweight)[:, : self.in_features].to(torch.int32) + 8).contiguous()
        scales = self.scale.t().to(torch.bfloat16)
        table = torch.stack([scales, torch.zeros_like(scales)], dim=2).contiguous()  # [groups, out, (scale, zero)]
        self._int4_kernel = (int4_layout.pack(levels), table)
        if int4_layout.readable(self.out_features):
            self.qweight = None

    @property
    def uses_kernel(self) -> bool:
        """Whether a kernel computes the layer (rather than a float matmul on the weight expanded per call)."""
        return self.compute != EXPANDED

    def stored_qweight(self) -> torch.Tensor:
        """The weight as ``state_dict`` stores it: int8 values, or int4 two per byte (offset 8)."""
        if self.qweight is not None:
            return self.qweight
        levels = int4_layout.unpack(self._int4_kernel[0], self.out_features, self.in_features)
        return weight_only_kernels.stored(4, levels.to(torch.int8) - 8)

    def __getstate__(self):
        state = super().__getstate__()
        state["_buffers"] = {**state["_buffers"], "qweight": self.stored_qweight()}
        return state

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "qweight"] = self.stored_qweight()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.qweight = torch.empty_like(self.stored_qweight())  # a target of the stored shape to load into
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._repack()  # the kernel's copy of the weight follows the loaded one

    def dequantized_weight(self) -> torch.Tensor:
        return weight_only_kernels.expand(self.bits, self.stored_qweight(), self.scale, self.group_size,
                                          self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        """The float32 weight, dequantized on each access: for model code that reads ``.weight`` (its dtype,
        shape or device)."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute == FXQ_KERNELS[self.bits]:
            y = weight_only_kernels.linear(self.bits, x.float(), self.qweight, self.scale, self.group_size,
                                           self.in_features, self.bias)
            return y.to(x.dtype)
        if self.compute == EXPANDED:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight().to(x.dtype), bias)
        packed, table = self._int4_kernel
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, self.group_size, table).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weight=int{self.bits} "
                f"symmetric, group_size={self.group_size}, compute={self.compute}")


def least_error_scales(grouped: torch.Tensor, top: int) -> torch.Tensor:
    """Per group (the last dimension) the symmetric scale with the least squared rounding error, among the
    absolute maximum / ``top`` shrunk by ``SHRINK_CANDIDATES`` factors down to ``SHRINK_LOWEST``: clipping a
    group's few largest weights buys finer steps for the rest (the real all-MiniLM-L6-v2 in int4, group 128:
    mean cosine 0.940 with max scales, 0.958 with these)."""
    widest = (grouped.abs().amax(dim=-1, keepdim=True) / top).clamp(min=torch.finfo(torch.float32).tiny)
    best, best_error = widest, None
    for factor in shrink_factors(SHRINK_CANDIDATES, SHRINK_LOWEST):
        scale = widest * float(factor)
        error = (torch.clamp(torch.round(grouped / scale), -top - 1, top) * scale - grouped).square().sum(-1, True)
        if best_error is None:
            best_error = error
            continue
        better = error < best_error
        best, best_error = torch.where(better, scale, best), torch.where(better, error, best_error)
    return best
