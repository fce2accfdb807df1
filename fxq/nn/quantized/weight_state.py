"""A quantized weight as plain tensors for ``state_dict``: int8 values, float32 scales, int32 zero points and
the channel axis. Quantized tensors serialize their per-channel scales as float64 and zero points as int64,
which for a depthwise-heavy net such as MobileNetV2 is a visible share of the int8 model's size."""

from __future__ import annotations

import torch

KEYS = ("weight_int8", "weight_scale", "weight_zero_point", "weight_axis")


def to_state(qweight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The plain tensors that rebuild ``qweight`` (axis -1 marks a per-tensor weight)."""
    if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = qweight.q_per_channel_scales().float()
        zero_point = qweight.q_per_channel_zero_points().int()
        axis = qweight.q_per_channel_axis()
    else:
        scale = torch.tensor([qweight.q_scale()], dtype=torch.float32)
        zero_point = torch.tensor([qweight.q_zero_point()], dtype=torch.int32)
        axis = -1
    return {"weight_int8": qweight.int_repr(), "weight_scale": scale, "weight_zero_point": zero_point,
            "weight_axis": torch.tensor(axis)}


def from_state(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The quantized weight ``to_state`` described."""
    values, scale, zero_point = state["weight_int8"], state["weight_scale"], state["weight_zero_point"]
    axis = int(state["weight_axis"])
    if axis < 0:
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero_point[0]))
    return torch._make_per_channel_quantized_tensor(values, scale.double(), zero_point.long(), axis)
