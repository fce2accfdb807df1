"""Min/max observers: the range is the running (or moving-average) min and max, per tensor or per channel.

Per-tensor and per-channel differ only in how a batch is reduced to (min, max) (``_reduce``); running and
moving-average differ only in how a batch's range updates the stored one (``_combine``). Each is one small
hook, so the four observers are combinations, not copies.
"""

from __future__ import annotations

from typing import Any

import torch

from fxq.errors import ConfigError
from fxq.observers.base import Observer


class MinMaxObserver(Observer):
    """The range is the min and max over every batch seen. Defaults: quint8, affine, per tensor."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    @property
    def has_data(self) -> bool:
        return self.min_val.numel() > 0 and bool(torch.isfinite(self.min_val).all())

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's (min, max), in float32."""
        low, high = torch.aminmax(x)
        return low.float(), high.float()

    def _combine(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored range updated with a later batch's: the running min and max."""
        return torch.minimum(self.min_val, low), torch.maximum(self.max_val, high)

    def _merge_ranges(self, low: torch.Tensor, high: torch.Tensor,
                      other: MinMaxObserver) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored range merged with ``other``'s: again the running min and max, which is exact."""
        return torch.minimum(self.min_val, low), torch.maximum(self.max_val, high)

    def _observe(self, x: torch.Tensor) -> None:
        low, high = self._reduce(x)
        self._check_finite(low, high)
        if self.has_data:
            self._check_channels(low, "this batch")
            low, high = self._combine(low, high)
        self.min_val, self.max_val = low, high

    def _merge(self, other: MinMaxObserver) -> None:
        low, high = other.min_val.clone(), other.max_val.clone()
        if self.has_data:
            self._check_channels(low, "the observer merged in")
            low, high = self._merge_ranges(low, high, other)
        self.min_val, self.max_val = low, high

    def _check_channels(self, low: torch.Tensor, where: str) -> None:
        """Per-channel ranges of different lengths must not be broadcast into each other."""
        if low.shape != self.min_val.shape:
            raise ConfigError(f"observer of node {self.node_name!r} has {self.min_val.numel()} channels "
                              f"along axis {self.ch_axis}, but {where} has {low.numel()}; per-channel "
                              "observers need the same channel count every time")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("min_val", "max_val"):  # per-channel buffers take their length from the saved state
            if prefix + name in state_dict:
                getattr(self, name).resize_(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        seen = self._seen_text(self.min_val, self.max_val) if self.has_data else ", no data"
        return super().extra_repr() + seen


class MovingAverageMinMaxObserver(MinMaxObserver):
    """The range follows each batch's min/max with an exponential moving average; the first batch sets it.

    Suits QAT and long calibration runs, where a few early or extreme batches should not pin the range.
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (isinstance(averaging_constant, (int, float)) and 0 < averaging_constant <= 1):
            raise ConfigError(f"averaging_constant is the weight of each new batch and must be in (0, 1]; got "
                              f"{averaging_constant!r}")
        self.averaging_constant = averaging_constant
        self.batches = 0  # how many batches the average has seen, so a merge weighs each side by it

    def _observe(self, x: torch.Tensor) -> None:
        super()._observe(x)
        self.batches += 1

    def _merge(self, other: MovingAverageMinMaxObserver) -> None:
        super()._merge(other)
        self.batches += other.batches

    def _combine(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.averaging_constant
        return self.min_val + c * (low - self.min_val), self.max_val + c * (high - self.max_val)

    def _merge_ranges(self, low: torch.Tensor, high: torch.Tensor,
                      other: MovingAverageMinMaxObserver) -> tuple[torch.Tensor, torch.Tensor]:
        """Two moving averages estimate the same typical range from different batches: take their mean, each
        weighted by the batches it saw (equal weights for a side whose count was lost, loaded from a state_dict)."""
        share = max(other.batches, 1) / (max(self.batches, 1) + max(other.batches, 1))
        return self.min_val + share * (low - self.min_val), self.max_val + share * (high - self.max_val)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "averaging_constant": self.averaging_constant}


class _PerChannel:
    """Mixin: one range per slice along ``ch_axis``. Defaults to symmetric qint8, the usual weight scheme."""

    per_channel = True

    def __init__(self, ch_axis: int = 0, dtype: torch.dtype = torch.qint8, symmetric: bool = True,
                 **kwargs: Any) -> None:
        if not isinstance(ch_axis, int) or isinstance(ch_axis, bool):
            raise ConfigError(f"ch_axis is the index of the channel dimension and must be an int; got {ch_axis!r}")
        super().__init__(dtype=dtype, symmetric=symmetric, **kwargs)
        self.ch_axis = ch_axis
        self.min_val, self.max_val = torch.empty(0), torch.empty(0)  # sized by the first batch

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ConfigError(f"observer of node {self.node_name!r} has ch_axis={self.ch_axis}, but the "
                              f"tensor it watches has shape {tuple(x.shape)}: give the observer a ch_axis in "
                              f"[{-x.dim()}, {x.dim() - 1}], the dimension that holds the channels")
        channels = x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)
        low, high = torch.aminmax(channels, dim=1)
        return low.float(), high.float()


class PerChannelMinMaxObserver(_PerChannel, MinMaxObserver):
    """Min and max per channel (weights: one scale per output channel)."""


class MovingAveragePerChannelMinMaxObserver(_PerChannel, MovingAverageMinMaxObserver):
    """Moving-average min and max per channel."""
