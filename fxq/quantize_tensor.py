"""Quantize a float tensor with qparams from an observer: per-tensor or per-channel, as the observer says."""

from __future__ import annotations

import torch


def quantize_with(observer, tensor: torch.Tensor, qparams: tuple | None = None) -> torch.Tensor:
    """Quantize ``tensor`` with ``observer``'s qparams (``qparams`` if already computed: a histogram's search
    is not free)."""
    scale, zero_point = qparams if qparams is not None else observer.calculate_qparams()
    if getattr(observer, "per_channel", False):
        return torch.quantize_per_channel(tensor.detach().float(), scale.double(), zero_point.long(),
                                          observer.ch_axis, observer.dtype)
    return torch.quantize_per_tensor(tensor.detach().float(), float(scale), int(zero_point), observer.dtype)


def describe_qparams(observer, qparams: tuple | None = None) -> dict:
    """Plain-data qparams for the node annotation: dtype, scheme and scale/zero point (lists if per channel)."""
    scale, zero_point = qparams if qparams is not None else observer.calculate_qparams()
    per_channel = bool(getattr(observer, "per_channel", False))
    result = {"dtype": str(observer.dtype).replace("torch.", ""),
              "scheme": "per_channel" if per_channel else "per_tensor"}
    if per_channel:
        result.update(axis=observer.ch_axis, scale=scale.tolist(), zero_point=zero_point.tolist())
    else:
        result.update(scale=float(scale), zero_point=int(zero_point))
    seen = observer.seen_range() if hasattr(observer, "seen_range") else None
    if seen is not None:  # what calibration saw (the dump shows it next to the qparams chosen from it)
        low, high = seen
        result.update(min=low.tolist() if low.dim() else float(low), max=high.tolist() if high.dim() else float(high))
    return result
