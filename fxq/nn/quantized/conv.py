"""Native int8 Conv1d/2d/3d (optionally fused with ReLU) on ``torch.ops.quantized.conv{1,2,3}d``."""

from __future__ import annotations

import torch

from fxq.nn.quantized.packed import PackedWeightModule


class QuantizedConv(PackedWeightModule):
    """y = conv(x, W) (+ ReLU) for 1, 2 or 3 spatial dims (from the weight's rank), zero padding only."""

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int, relu: bool,
                 stride, padding, dilation, groups: int) -> None:
        super().__init__(qweight, bias, scale, zero_point, relu)
        self.dims = qweight.dim() - 2
        self.stride, self.padding = _tuple(stride, self.dims), _tuple(padding, self.dims)
        self.dilation, self.groups = _tuple(dilation, self.dims), int(groups)
        self._repack()

    @property
    def fxq_concept(self) -> str:
        return f"conv{self.dims}d"

    def _pack(self):
        prepack = getattr(torch.ops.quantized, f"conv{self.dims}d_prepack")
        return prepack(self.qweight, self.bias, list(self.stride), list(self.padding), list(self.dilation),
                       self.groups)

    def _kernel(self):
        return getattr(torch.ops.quantized, f"conv{self.dims}d_relu" if self.relu else f"conv{self.dims}d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._packed, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        out_channels, in_per_group = self.qweight.shape[:2]
        return (f"{in_per_group * self.groups}, {out_channels}, kernel_size={tuple(self.qweight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"{self._weight_repr()}")


def _tuple(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * dims
