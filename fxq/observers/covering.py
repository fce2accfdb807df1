"""An observer's range widened to cover a range that a pass chose for the value's readers.

A convert-side pass that knows more than the value's own observer (``sensitivity-ranges``: the model's output
pays for the extremes the observer clipped) puts one of these in the converted graph in place of the observer. The prepared model keeps
its own observer, so converting it again, or calibrating it further, starts from what calibration saw.
"""

from __future__ import annotations

import torch

from fxq.observers.base import Observer


class CoveringObserver(Observer):
    """The qparams of ``observer`` over its chosen range joined with [``low``, ``high``]; ``reason`` says why
    (the dump shows it)."""

    def __init__(self, observer: Observer, low: float, high: float, reason: str) -> None:
        super().__init__(dtype=observer.dtype, symmetric=observer.symmetric, quant_min=observer.quant_min,
                         quant_max=observer.quant_max, eps=observer.eps)
        self.custom_range, self.reduce_range, self.clamp_to = observer.custom_range, observer.reduce_range, \
            observer.clamp_to
        self.observer = observer
        self.low, self.high, self.reason = float(low), float(high), reason
        self.node_name = observer.node_name

    @property
    def has_data(self) -> bool:
        return self.observer.has_data

    def _observe(self, x: torch.Tensor) -> None:
        """Records nothing: it serves qparams only, and the observer it wraps belongs to the prepared model."""

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.observer.observed_range()
        return torch.minimum(low, torch.tensor(self.low)), torch.maximum(high, torch.tensor(self.high))

    def seen_range(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.observer.seen_range()

    def extra_repr(self) -> str:
        return f"covers=[{self.low:.4g}, {self.high:.4g}] ({self.reason})"
