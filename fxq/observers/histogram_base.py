"""What every histogram-based observer shares: a fixed number of equal bins over the range seen so far, kept
cheap during calibration and re-binned when the range grows, and the piecewise-linear cumulative count that
re-binning, percentiles and entropy all read it through.

Calibration costs one ``aminmax`` and one ``histc`` per batch; how a range is chosen from the histogram is the
subclass's business and runs only when qparams are asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fxq.errors import ConfigError
from fxq.observers.base import Observer


class HistogramCollector(Observer):
    """A per-tensor histogram of everything observed; subclasses implement ``observed_range``.

    Args:
        bins: histogram resolution over the range seen so far.
        **kwargs: the settings of ``Observer``.
    """

    def __init__(self, bins: int = 2048, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ConfigError(f"{type(self).__name__} needs bins >= 1 (an int); got bins={bins!r}")
        self.bins = bins
        self.register_buffer("histogram", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    @property
    def has_data(self) -> bool:
        return bool(torch.isfinite(self.min_val))

    def _observe(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x)
        self._check_finite(low, high)
        self._widen(low.float(), high.float())
        self.histogram += torch.histc(x.float(), self.bins, float(self.min_val), float(self.max_val))

    def _widen(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """Grow the histogram's range to cover [low, high], re-binning the counts it already holds."""
        if self.has_data:
            low, high = torch.minimum(low, self.min_val), torch.maximum(high, self.max_val)
        if high <= low:  # a single value so far: give the histogram a tiny width
            high = low + max(abs(float(low)) * 1e-6, 1e-8)
        if self.has_data and (low != self.min_val or high != self.max_val):
            self.histogram = rebin(self.histogram, float(self.min_val), float(self.max_val), float(low),
                                   float(high))
        self.min_val.copy_(low)
        self.max_val.copy_(high)

    def _merge(self, other: HistogramCollector) -> None:
        self._widen(other.min_val, other.max_val)
        self.histogram += rebin(other.histogram, float(other.min_val), float(other.max_val),
                                float(self.min_val), float(self.max_val))

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "bins": self.bins}

    def _range_of_result(self, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
        """A chosen range as ``observed_range`` returns it."""
        return torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)

    def extra_repr(self) -> str:
        seen = self._seen_text(self.min_val, self.max_val) if self.has_data else ", no data"
        return f"{super().extra_repr()}, bins={self.bins}{seen}"


def cumulative(counts: torch.Tensor, low: float, high: float, points: np.ndarray) -> np.ndarray:
    """How many of the counted values lie below each of ``points``, taking the values inside each bin of
    [low, high] to be spread evenly; 0 below ``low``, everything above ``high``. In numpy, like the range
    searches that call it many times: for arrays this size its per-call cost is a fraction of torch's."""
    bins = counts.numel()
    below_edge = np.concatenate(([0.0], counts.double().numpy().cumsum()))
    position = np.clip((points - low) / (high - low) * bins, 0, bins)
    index = np.minimum(np.floor(position).astype(np.int64), bins - 1)
    before = below_edge[index]
    return before + (position - index) * (below_edge[index + 1] - before)


def rebin(counts: torch.Tensor, old_low: float, old_high: float, new_low: float,
          new_high: float) -> torch.Tensor:
    """``counts`` over [old_low, old_high] spread onto as many equal bins over [new_low, new_high] (which
    contains it). The same range gives the counts unchanged (interpolating would round them)."""
    if (old_low, old_high) == (new_low, new_high):
        return counts.clone()
    edges = torch.linspace(new_low, new_high, counts.numel() + 1, dtype=torch.float64).numpy()
    return torch.from_numpy(np.diff(cumulative(counts, old_low, old_high, edges)))
