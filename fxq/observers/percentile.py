"""Percentile observer: the range holds a given share of the values seen and clips the rest, read off the
histogram (so calibration never keeps or sorts the values themselves)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fxq.errors import ConfigError
from fxq.observers.histogram_base import HistogramCollector, cumulative


class PercentileObserver(HistogramCollector):
    """Per-tensor range from percentiles of the values seen (default quint8 affine).

    Affine: [the (100 - percentile)th percentile, the percentile-th]. Symmetric: [-t, t] for t the
    percentile-th percentile of |x|, so the share clipped is the same whichever side the tail is on.
    ``percentile=100`` gives the seen min and max. Within a bin values count as spread evenly, so the ends are
    exact to a fraction of a bin.

    Args:
        percentile: in (50, 100]; e.g. 99.99 clips the most extreme 0.01% on each side.
        bins: histogram resolution over the range seen so far.
        **kwargs: the settings of ``Observer``.
    """

    def __init__(self, percentile: float = 99.99, bins: int = 2048, **kwargs: Any) -> None:
        if not (isinstance(percentile, (int, float)) and not isinstance(percentile, bool)
                and 50 < percentile <= 100):
            raise ConfigError(f"PercentileObserver needs percentile in (50, 100] (the share of values kept on "
                              f"each side, in %); got percentile={percentile!r}")
        super().__init__(bins=bins, **kwargs)
        self.percentile = float(percentile)

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The percentiles, read now off the histogram."""
        low, high = float(self.min_val), float(self.max_val)
        share = self.percentile / 100
        edges = np.linspace(low, high, self.bins + 1)
        if self.symmetric:  # the share within [-t, t] changes slope only where t or -t is a bin edge
            magnitudes = np.unique(np.concatenate(([0.0], np.abs(edges))))
            within = cumulative(self.histogram, low, high, magnitudes) - \
                cumulative(self.histogram, low, high, -magnitudes)
            t = _first_reaching(magnitudes, within, share * float(within[-1]))
            return self._range_of_result(-t, t)
        below = cumulative(self.histogram, low, high, edges)
        total = float(below[-1])
        return self._range_of_result(_first_reaching(edges, below, (1 - share) * total),
                                     _first_reaching(edges, below, share * total))

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "percentile": self.percentile}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, percentile={self.percentile:g}"


def _first_reaching(points: np.ndarray, counts: np.ndarray, target: float) -> float:
    """The smallest point where the non-decreasing ``counts`` (given at ``points``) reach ``target``,
    interpolating linearly between points."""
    index = int(np.searchsorted(counts, target, side="left"))
    if index == 0:
        return float(points[0])
    index = min(index, len(points) - 1)
    gained = counts[index] - counts[index - 1]
    fraction = min(max((target - counts[index - 1]) / gained, 0.0), 1.0) if gained > 0 else 1.0
    return float(points[index] - (1 - fraction) * (points[index] - points[index - 1]))
