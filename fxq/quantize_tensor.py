"""Quantize a float tensor with qparams from an observer: per-tensor or per-channel, as the observer says."""

from __future__ import annotations

from typing import NamedTuple

import torch

from fxq.observers import MinMaxObserver, Observer
from fxq.observers.covering import CoveringObserver
from fxq.precision import INT16_RANGE
from fxq.qparams import qrange


def quantize_with(observer, tensor: torch.Tensor, qparams: tuple | None = None) -> torch.Tensor:
    """Quantize ``tensor`` with ``observer``'s qparams (``qparams`` if already computed: a histogram's search
    is not free)."""
    scale, zero_point = qparams if qparams is not None else observer.calculate_qparams()
    values = _within_levels(observer, tensor.detach().float(), scale, zero_point)
    if getattr(observer, "per_channel", False):
        return torch.quantize_per_channel(values, scale.double(), zero_point.long(), observer.ch_axis, observer.dtype)
    return torch.quantize_per_tensor(values, float(scale), int(zero_point), observer.dtype)


def _within_levels(observer, tensor: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``tensor`` clamped to the observer's levels [quant_min, quant_max]: torch's quantize clamps only to the
    dtype's range, and a symmetric scale puts the largest magnitude half a level beyond the top one (63.5 of
    [-64, 63]; 7.5 of a 4-bit [-8, 7]), which rounding would otherwise store as 64 or 8."""
    shape = [1] * tensor.dim()
    if getattr(observer, "per_channel", False) and tensor.dim():
        shape[observer.ch_axis] = -1
    scale, zero_point = scale.float().reshape(shape or [-1]), zero_point.float().reshape(shape or [-1])
    low, high = _level_bounds(observer, scale, zero_point)
    if tensor.dim() == 0:
        low, high = low.reshape(()), high.reshape(())
    return torch.minimum(torch.maximum(tensor, low), high)


def _level_bounds(observer, scale, zero_point):
    """The float values of the observer's lowest and highest levels."""
    return (observer.quant_min - zero_point) * scale, (observer.quant_max - zero_point) * scale


def activation_bounds(observer, scale: float, zero_point: int) -> tuple[float, float] | None:
    """The float range a per-tensor quantize of an activation must be clamped to first, as ``_within_levels`` does
    for weights, when torch's quantize would store levels beyond the observer's: a qint32 observer with a
    narrower range (int16 activations; torch has no qint16 and clamps a qint32 only to 32 bits). None otherwise:
    8-bit activations keep torch's clamp to their dtype's range, as they always had."""
    full = qrange(observer.dtype)
    if observer.dtype != torch.qint32 or (observer.quant_min, observer.quant_max) == full:
        return None
    low, high = _level_bounds(observer, float(scale), int(zero_point))
    return float(low), float(high)


def dtype_name(observer) -> str:
    """The dtype the annotation records: "int16" for 16-bit levels held in a qint32, else the torch dtype's name."""
    if observer.dtype == torch.qint32 and (observer.quant_min, observer.quant_max) == INT16_RANGE:
        return "int16"
    return str(observer.dtype).replace("torch.", "")


def describe_qparams(observer, qparams: tuple | None = None) -> dict:
    """Plain-data qparams for the node annotation: dtype, scheme and scale/zero point (lists if per channel);
    int16 levels say "int16", with the dtype holding them as ``storage`` ("qint32")."""
    scale, zero_point = qparams if qparams is not None else observer.calculate_qparams()
    per_channel = bool(getattr(observer, "per_channel", False))
    result = {"dtype": dtype_name(observer), "scheme": "per_channel" if per_channel else "per_tensor"}
    if result["dtype"] != str(observer.dtype).replace("torch.", ""):
        result["storage"] = str(observer.dtype).replace("torch.", "")
    if per_channel:
        result.update(axis=observer.ch_axis, scale=scale.tolist(), zero_point=zero_point.tolist())
    else:
        result.update(scale=float(scale), zero_point=int(zero_point))
    if isinstance(observer, CoveringObserver):
        result["why_range"] = observer.reason
    if getattr(observer, "clamp_to", None) is not None:  # its one reader clamps it: only that part is quantized
        result["clamped_to"] = list(observer.clamp_to)
    seen = observer.seen_range() if hasattr(observer, "seen_range") else None
    if seen is not None:  # what calibration saw (the dump shows it next to the qparams chosen from it)
        low, high = seen
        result.update(min=low.tolist() if low.dim() else float(low), max=high.tolist() if high.dim() else float(high))
    return result


class QuantizedWeight(NamedTuple):
    """A weight as ``lower`` stores it: the observer that chose its qparams, the qparams, the quantized tensor, and
    why it is per tensor when the qconfig asked per channel (None otherwise)."""

    observer: Observer
    qparams: tuple
    qweight: torch.Tensor
    why_per_tensor: str | None


def quantize_weight(qconfig, support, weight: torch.Tensor, node_name: str) -> QuantizedWeight:
    """Quantize ``weight`` with ``qconfig``'s weight observer, per tensor if the backend's kernel needs it
    (``support.per_tensor_weight``). ``lower`` and ``bias-correction`` both call this, so the error bias correction
    compensates is exactly the error lowering makes."""
    observer = qconfig.weight()
    why_per_tensor = support.per_tensor_weight if support is not None and observer.per_channel else None
    if why_per_tensor:
        observer = per_tensor_like(observer)
    observer.node_name = f"{node_name} (weight)"
    observer(weight.detach())
    qparams = observer.calculate_qparams()
    return QuantizedWeight(observer, qparams, quantize_with(observer, weight, qparams), why_per_tensor)


def per_tensor_like(observer: Observer) -> Observer:
    """A per-tensor min/max observer with the same dtype, scheme and range as a per-channel one."""
    custom = {"quant_min": observer.quant_min, "quant_max": observer.quant_max} if observer.custom_range else {}
    return MinMaxObserver(dtype=observer.dtype, symmetric=observer.symmetric, eps=observer.eps,
                          reduce_range=observer.reduce_range and not observer.custom_range, **custom)
