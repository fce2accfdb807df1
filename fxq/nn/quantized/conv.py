"""Native int8 convolutions on ``torch.ops.quantized``: Conv1d/2d/3d (optionally fused with ReLU) and
ConvTranspose1d/2d/3d."""

from __future__ import annotations

import torch

from fxq.nn.quantized.packed import PackedWeightModule

# Which engine packs a transposed convolution of 1, 2 or 3 spatial dims when the selected engine is one of x86's.
# Measured on torch 2.13 against the float computation on the same int8 values, over a few hundred shapes each:
# onednn's int8 transposed convolution (the "x86" engine's pick) is wrong for most shapes (torch.ao's own module
# too); fbgemm's 2-d one is wrong and nondeterministic for 2x2 kernels with channel counts that are multiples of
# 8 and a batch above 1 (the common 2x upsampling layer), right for 1-d and 3-d; qnnpack's was right for every
# 1-d and 2-d shape and has no 3-d kernel.
TRANSPOSED_ENGINE = {1: "fbgemm", 2: "qnnpack", 3: "fbgemm"}
X86_ENGINES = ("x86", "onednn", "fbgemm")


class QuantizedConv(PackedWeightModule):
    """y = conv(x, W) (+ ReLU) for 1, 2 or 3 spatial dims (from the weight's rank), zero padding only.

    ``transposed=True`` runs the transposed convolution (``conv_transpose{n}d``, no ReLU form); the x86 kernel
    accepts only a per-tensor weight for it.
    """

    _qparams = ("scale", "zero_point")

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int, relu: bool,
                 stride, padding, dilation, groups: int, *, transposed: bool = False, output_padding=0) -> None:
        super().__init__(qweight, bias, relu, (scale, zero_point))
        self.dims = qweight.dim() - 2
        self.stride, self.padding = _tuple(stride, self.dims), _tuple(padding, self.dims)
        self.dilation, self.groups = _tuple(dilation, self.dims), int(groups)
        self.transposed, self.output_padding = bool(transposed), _tuple(output_padding, self.dims)
        if self.transposed and self.engine in X86_ENGINES:
            self.engine = TRANSPOSED_ENGINE[self.dims]
        self._repack()

    @property
    def fxq_concept(self) -> str:
        return f"conv_transpose{self.dims}d" if self.transposed else f"conv{self.dims}d"

    def _pack(self, weight: torch.Tensor):
        if self.transposed:
            prepack = getattr(torch.ops.quantized, f"conv_transpose{self.dims}d_prepack")
            return prepack(weight, self.bias, list(self.stride), list(self.padding), list(self.output_padding),
                           list(self.dilation), self.groups)
        prepack = getattr(torch.ops.quantized, f"conv{self.dims}d_prepack")
        return prepack(weight, self.bias, list(self.stride), list(self.padding), list(self.dilation), self.groups)

    def _unpack(self) -> torch.Tensor:
        weight = self._packed.unpack()[0]
        if self.dims == 1:  # packed as a 2-d convolution over (1, length)
            weight = weight.squeeze(2)
        return weight

    def _kernel(self):
        return getattr(torch.ops.quantized, self.fxq_concept + ("_relu" if self.relu else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._packed, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        if self.transposed:  # weight: (in, out / groups, *kernel)
            in_channels, out_channels = self.qweight.shape[0], self.qweight.shape[1] * self.groups
        else:  # weight: (out, in / groups, *kernel)
            out_channels, in_channels = self.qweight.shape[0], self.qweight.shape[1] * self.groups
        extra = f", output_padding={self.output_padding}" if self.transposed else ""
        return (f"{in_channels}, {out_channels}, kernel_size={tuple(self.qweight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}{extra}, dilation={self.dilation}, "
                f"groups={self.groups}, {self._weight_repr()}")


def _tuple(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * dims
