"""Min/max observers: the range is the running (or moving-average) min and max, per tensor or per channel.

Per-tensor and per-channel differ only in how a batch is reduced to (min, max); the moving-average variants
differ only in how a new batch's range updates the stored one. Both are small hooks, not separate classes.
"""

from __future__ import annotations

import torch

from fxq.observers.base import Observer


class MinMaxObserver(Observer):
    """The range is the min and max over every batch seen."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.aminmax(x)

    def _observe(self, x: torch.Tensor) -> None:
        low, high = self._reduce(x)
        self._check_finite(low, high)
        self._update(low, high)

    def _update(self, low: torch.Tensor, high: torch.Tensor) -> None:
        if not self.has_data:
            self._store(low, high)
        else:
            self._store(torch.minimum(self.min_val, low), torch.maximum(self.max_val, high))

    def _store(self, low: torch.Tensor, high: torch.Tensor) -> None:
        if self.min_val.shape != low.shape:
            self.min_val.resize_(low.shape)
            self.max_val.resize_(high.shape)
        self.min_val.copy_(low)
        self.max_val.copy_(high)

    @property
    def has_data(self) -> bool:
        return bool(self.min_val.numel()) and bool(torch.isfinite(self.min_val).all())

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def _merge(self, other: MinMaxObserver) -> None:
        if self.has_data:
            self._store(torch.minimum(self.min_val, other.min_val), torch.maximum(self.max_val, other.max_val))
        else:
            self._store(other.min_val.clone(), other.max_val.clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("min_val", "max_val"):  # per-channel buffers take their size from the saved state
            if prefix + name in state_dict:
                getattr(self, name).resize_(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """The range follows each batch's min/max with an exponential moving average (first batch sets it).

    Suits QAT and long calibration runs where early batches should not pin the range forever.
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.averaging_constant = averaging_constant

    def _update(self, low: torch.Tensor, high: torch.Tensor) -> None:
        if not self.has_data:
            self._store(low, high)
        else:
            c = self.averaging_constant
            self._store(self.min_val + c * (low - self.min_val), self.max_val + c * (high - self.max_val))


class _PerChannel:
    """Mixin: reduce each channel along ``ch_axis`` separately. Defaults to symmetric qint8, for weights."""

    per_channel = True

    def __init__(self, ch_axis: int = 0, dtype: torch.dtype = torch.qint8, symmetric: bool = True, **kwargs) -> None:
        super().__init__(dtype=dtype, symmetric=symmetric, **kwargs)
        self.ch_axis = ch_axis
        self.min_val.resize_(0)
        self.max_val.resize_(0)

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)
        return torch.aminmax(channels, dim=1)


class PerChannelMinMaxObserver(_PerChannel, MinMaxObserver):
    """Min and max per channel (weights: one scale per output channel)."""


class MovingAveragePerChannelMinMaxObserver(_PerChannel, MovingAverageMinMaxObserver):
    """Moving-average min and max per channel."""
