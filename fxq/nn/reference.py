"""Reference weighted modules: the float module, with its weight stored as a real quantized tensor and
dequantized on every call. This is what an int8 kernel computes, written in float ops anyone can read; native
backends are checked against it."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from fxq.ops import concept_of_module


class WeightQuantized(nn.Module):
    """Runs ``module`` with its weight (at ``weight_name``, e.g. "weight" or "0.weight") taken from ``qweight``.

    The module keeps everything else (bias, stride, padding, the fused ReLU...), so one class serves every
    weighted op instead of one reference class per op. It takes ``module`` over (its weight attribute is
    removed): lowering hands it the converted graph's own copy.
    """

    _fxq_leaf = True

    def __init__(self, module: nn.Module, qweight: torch.Tensor, weight_name: str = "weight") -> None:
        super().__init__()
        self.module = module
        owner_path, _, leaf = weight_name.rpartition(".")
        owner = self.module.get_submodule(owner_path) if owner_path else self.module
        delattr(owner, leaf)
        self.weight_name = weight_name
        self.register_buffer("qweight", qweight)
        self.fxq_concept = concept_of_module(module)  # what it computes ("linear", "conv2d_relu"...), for patterns

    def forward(self, *args, **kwargs):
        return functional_call(self.module, {self.weight_name: self.qweight.dequantize()}, args, kwargs)

    def extra_repr(self) -> str:
        q = self.qweight
        if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scheme = f"per-channel axis={q.q_per_channel_axis()}"
        else:
            scheme = f"per-tensor scale={q.q_scale():.4g} zero_point={q.q_zero_point()}"
        return f"weight={self.weight_name} dtype={q.dtype} {scheme}"
