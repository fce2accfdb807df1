"""Native int8 Linear (optionally fused with ReLU) on ``torch.ops.quantized.linear``."""

from __future__ import annotations

import torch

from fxq.nn.quantized.packed import PackedWeightModule


class QuantizedLinear(PackedWeightModule):
    """y = linear(x, W) (+ ReLU), quantized input and output, int8 prepacked weight.

    Also runs the functional form (``F.linear`` with a weight parameter): lowering builds one from the weight.
    """

    fxq_concept = "linear"

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int,
                 relu: bool) -> None:
        super().__init__(qweight, bias, relu, (scale, zero_point))
        self._repack()

    def _pack(self):
        return torch.ops.quantized.linear_prepack(self.qweight, self.bias)

    def _kernel(self):
        return torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._packed, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        out_features, in_features = self.qweight.shape
        return f"in_features={in_features}, out_features={out_features}, {self._weight_repr()}"
