"""A packed module's weight as plain tensors for ``state_dict``. A quantized weight becomes int8 values, float32
scales, int32 zero points and the channel axis: quantized tensors serialize their per-channel scales as float64
and zero points as int64, which for a depthwise-heavy net such as MobileNetV2 is a visible share of the int8
model's size. A float weight (fp16 dynamic linears) is stored as it is."""

from __future__ import annotations

import torch

KEYS = ("weight_int8", "weight_scale", "weight_zero_point", "weight_axis")
FLOAT_KEYS = ("weight",)


def keys_like(weight: torch.Tensor) -> tuple[str, ...]:
    """The state keys a weight of this kind is stored under."""
    return KEYS if weight.is_quantized else FLOAT_KEYS


def to_state(qweight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The plain tensors that rebuild ``qweight`` (axis -1 marks a per-tensor weight)."""
    if not qweight.is_quantized:
        return {"weight": qweight}
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
    """The weight ``to_state`` described."""
    if "weight" in state:
        return state["weight"]
    values, scale, zero_point = state["weight_int8"], state["weight_scale"], state["weight_zero_point"]
    axis = int(state["weight_axis"])
    if axis < 0:
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero_point[0]))
    return torch._make_per_channel_quantized_tensor(values, scale.double(), zero_point.long(), axis)
