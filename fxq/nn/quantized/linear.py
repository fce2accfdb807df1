"""Native int8 Linear (optionally fused with ReLU) on ``torch.ops.quantized.linear``."""

from __future__ import annotations

import torch

from fxq.nn.quantized.packed import PackedWeightModule


class QuantizedLinear(PackedWeightModule):
    """y = linear(x, W) (+ ReLU), quantized input and output, int8 prepacked weight.

    Also runs the functional form (``F.linear`` with a weight parameter): lowering builds one from the weight.
    """

    fxq_concept = "linear"
    _qparams = ("scale", "zero_point")

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int,
                 relu: bool) -> None:
        super().__init__(qweight, bias, relu, (scale, zero_point))
        self._repack()

    def _pack(self, weight: torch.Tensor):
        return torch.ops.quantized.linear_prepack(weight, self.bias)

    def _unpack(self) -> torch.Tensor:
        return torch.ops.quantized.linear_unpack(self._packed)[0]

    def _kernel(self):
        return torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._packed, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        out_features, in_features = self.qweight.shape
        return f"in_features={in_features}, out_features={out_features}, {self._weight_repr()}"


class QuantizedLinearFloatOutput(PackedWeightModule):
    """y = linear(x, W) (+ ReLU) with float input and output: the kernel quantizes ``x`` with the calibrated
    input qparams, multiplies in int8 and returns its int32 sums scaled to float, never requantized. For linears
    whose output only float ops read (a transformer's residual adds and layer norms): an int8 output would be
    rounded on one per-tensor scale, which a few outlier channels stretch over all the others.

    fbgemm only (``quantized.linear_with_input_q_dq_qweight_dq_output_fp32``); qnnpack has no such kernel.
    """

    fxq_concept = "linear"
    _qparams = ("input_scale", "input_zero_point")

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, input_scale: float,
                 input_zero_point: int, relu: bool) -> None:
        super().__init__(qweight, bias, relu)
        self.input_scale, self.input_zero_point = float(input_scale), int(input_zero_point)
        self._repack()

    def _pack(self, weight: torch.Tensor):
        return torch.ops.quantized.linear_prepack(weight, self.bias)

    def _unpack(self) -> torch.Tensor:
        return torch.ops.quantized.linear_unpack(self._packed)[0]

    def _kernel(self):
        ops = torch.ops.quantized
        return (ops.linear_with_input_q_dq_qweight_dq_relu_output_fp32 if self.relu
                else ops.linear_with_input_q_dq_qweight_dq_output_fp32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.input_scale, self.input_zero_point, self._packed)

    def extra_repr(self) -> str:
        out_features, in_features = self.qweight.shape
        weight = self._weight_repr().split("weight=", 1)[1]
        return (f"in_features={in_features}, out_features={out_features}, input_scale={self.input_scale:.4g}, "
                f"input_zero_point={self.input_zero_point}, output=float, weight={weight}")
