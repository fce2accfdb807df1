"""Dynamically quantized Linear: float in, float out. The weight is int8 (prepacked) or fp16; with an int8
weight the kernel quantizes each input batch to 8 bits from its own min/max on the fly, so no calibration is
needed. The choice users make first for NLP models: linear layers dominate their time and their weights.

The kernel's packed weight is the only copy in memory: ``qweight`` unpacks it (see ``PackedWeightModule``), so
``state_dict``, pickling, ``fxq.save`` and ``.weight`` see what they saw when the module kept its own copy as well,
which doubled its memory."""

from __future__ import annotations

import torch

from fxq.nn.quantized.packed import PackedWeightModule


class DynamicLinear(PackedWeightModule):
    """y = linear(x, W) (+ ReLU) with a qint8 weight (``torch.ops.quantized.linear_dynamic``) or a float16 one
    (``linear_dynamic_fp16``). ``reduce_range`` quantizes activations to 7 bits (fbgemm without VNNI can overflow
    in 16-bit accumulation at full range; ``fxq.quantize_dynamic`` narrows the weights to 7 bits instead)."""

    fxq_concept = "linear"
    __jit_unused_properties__ = []  # ``weight`` reads ``qweight``, and scripted model code may read ``weight``
    # read off each weight as it is packed: a weight loaded by fxq.load or unpickling comes without them
    _kernel_state = (*PackedWeightModule._kernel_state, "fp16", "in_features", "out_features")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = False,
                 reduce_range: bool = False) -> None:
        if not (weight.dtype == torch.qint8 or weight.dtype == torch.float16):
            raise TypeError(f"DynamicLinear takes a qint8 or float16 weight, got {weight.dtype}")
        super().__init__(weight, bias, relu)
        self.reduce_range = bool(reduce_range)
        self._repack()

    def _unpack(self) -> torch.Tensor:
        if self.fp16:
            return torch.ops.quantized.linear_unpack_fp16(self._packed)[0].half()
        return torch.ops.quantized.linear_unpack(self._packed)[0]

    @property
    def weight(self) -> torch.Tensor:
        """The float32 weight the layer computes with, dequantized on each access: for model code that reads
        ``.weight`` (its dtype, shape or device), as some Hugging Face models do; the layer runs on the packed one."""
        return self.qweight.dequantize() if not self.fp16 else self.qweight.float()

    def _pack(self, weight: torch.Tensor):
        self.fp16 = weight.dtype == torch.float16
        self.out_features, self.in_features = weight.shape
        if self.fp16:
            return torch.ops.quantized.linear_prepack_fp16(weight.float(), self.bias)
        return torch.ops.quantized.linear_prepack(weight, self.bias)

    def _kernel(self):
        ops = torch.ops.quantized
        if self.fp16:
            return ops.linear_relu_dynamic_fp16 if self.relu else ops.linear_dynamic_fp16
        return ops.linear_relu_dynamic if self.relu else ops.linear_dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the kernels take float32: a bfloat16 or float16 model gets its own dtype back
        return self._compute(x.float()).to(x.dtype)

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        # the kernel an attribute (TorchScript compiles a call of it), its reduce_range argument spelled out
        # only where set: the fp16 kernels take none
        if self.reduce_range:
            if self.relu:
                return torch.ops.quantized.linear_relu_dynamic(x, self._packed, True)
            return torch.ops.quantized.linear_dynamic(x, self._packed, True)
        return self._run(x, self._packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._weight_repr()}"
