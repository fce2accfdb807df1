"""Histogram observer: keep a histogram of everything seen, then pick the range that minimises the expected
quantization error, clipping rare outliers when that costs less than the resolution they would waste.

The histogram itself (and its re-binning when the range grows) is ``HistogramCollector``'s; this file is the
range search, which runs only when qparams are asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fxq.errors import ConfigError
from fxq.observers.histogram_base import HistogramCollector


class HistogramObserver(HistogramCollector):
    """Error-minimising range from a histogram of the observed values (per tensor; default quint8 affine).

    The chosen [min, max] minimises, over the histogram, the rounding noise of the values inside it (a
    quantization step squared over 12 each) plus the clipping error of the values outside it (their squared
    distance to the nearer end).

    Args:
        bins: histogram resolution over the range seen so far.
        search_step: affine ranges are first searched with ends every ``search_step`` bins, then refined
            eightfold per level down to single bins around the best (symmetric ranges are searched at
            single-bin resolution directly).
        **kwargs: the settings of ``Observer``.
    """

    def __init__(self, bins: int = 2048, search_step: int = 64, **kwargs: Any) -> None:
        if not isinstance(search_step, int) or isinstance(search_step, bool) or search_step < 1:
            raise ConfigError(f"HistogramObserver needs search_step >= 1 (an int); got search_step={search_step!r}")
        super().__init__(bins=bins, **kwargs)
        self.search_step = search_step

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The error-minimising range, searched now over the histogram."""
        lo, hi = least_error_range(self.histogram, float(self.min_val), float(self.max_val),
                                   self.quant_max - self.quant_min, self.symmetric, self.search_step)
        return self._range_of_result(lo, hi)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "search_step": self.search_step}


def least_error_range(counts: torch.Tensor, low: float, high: float, levels: int, symmetric: bool,
                      search_step: int = 64) -> tuple[float, float]:
    """The range with the least expected squared quantization error over ``counts`` (a histogram over [low, high],
    or any non-negative weights per bin) at ``levels`` steps: [-b, b] if ``symmetric``, else [lo, hi] around 0."""
    if symmetric:
        return _best_symmetric_range(counts, low, high, levels)
    return _best_affine_range(counts, low, high, levels, search_step)


def expected_error(counts: torch.Tensor, low: float, high: float, levels: int, lo: float, hi: float) -> float:
    """The expected squared quantization error of ``counts`` (over [low, high]) quantized over [lo, hi]."""
    return float(_ExpectedError(counts, low, high, levels)(np.array([lo]), np.array([hi]))[0])


def _best_symmetric_range(counts: torch.Tensor, low: float, high: float, levels: int) -> tuple[float, float]:
    """The best [-b, b], with b tried at every bin width up to the largest magnitude seen."""
    bins = counts.numel()
    bound = max(-low, high) * np.arange(1, bins + 1, dtype=np.float64) / bins
    error = _ExpectedError(counts, low, high, levels)(-bound, bound)
    best = float(bound[np.argmin(error)])
    return -best, best


def _best_affine_range(counts: torch.Tensor, low: float, high: float, levels: int,
                       step: int) -> tuple[float, float]:
    """The best [lo, hi] between bin edges, coarse to fine: pairs of edges ``step`` bins apart, then pairs
    within one coarse step of the best pair at an eighth of the step, down to single bins. A few hundred
    candidates per level instead of every pair keeps convert fast on graphs with thousands of observers.
    Ranges are widened to include 0, as the qparams will be."""
    bins = counts.numel()
    error = _ExpectedError(counts, low, high, levels)
    width = (high - low) / bins

    def best_pair(starts: np.ndarray, ends: np.ndarray) -> tuple[int, int]:
        start, end = np.meshgrid(starts, ends, indexing="ij")
        keep = start < end
        start, end = start[keep], end[keep]
        lo = np.minimum(low + width * start, 0.0)
        hi = np.maximum(low + width * end, 0.0)
        best = np.argmin(error(lo, hi))
        return int(start[best]), int(end[best])

    def around(edge: int, radius: int, stride: int) -> np.ndarray:
        return np.arange(max(edge - radius, 0), min(edge + radius, bins) + 1, stride)

    grid = np.append(np.arange(0, bins, step), bins)
    start, end = best_pair(grid, grid)
    while step > 1:
        finer = max(step // 8, 1)
        start, end = best_pair(around(start, step, finer), around(end, step, finer))
        step = finer
    return min(low + width * start, 0.0), max(low + width * end, 0.0)


class _ExpectedError:
    """Expected squared quantization error of a histogram's values for many candidate ranges at once.

    Each bin counts as its values sitting at its centre. Prefix sums of n, n*c and n*c^2 over the bins give
    each candidate's clipping error in O(log bins), so all candidates are evaluated in a few array ops. The
    arrays are small and the ops many (thousands of observers in a big graph), so this runs in numpy, whose
    per-call overhead is a fraction of torch's.
    """

    def __init__(self, counts: torch.Tensor, low: float, high: float, levels: int) -> None:
        counts = counts.double().numpy()
        bins = counts.size
        self.centres = low + (high - low) / bins * (np.arange(bins, dtype=np.float64) + 0.5)
        self.n = np.concatenate(([0.0], counts.cumsum()))
        self.s1 = np.concatenate(([0.0], (counts * self.centres).cumsum()))
        self.s2 = np.concatenate(([0.0], (counts * self.centres**2).cumsum()))
        self.levels = levels

    def __call__(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        n, s1, s2 = self.n, self.s1, self.s2
        below = np.searchsorted(self.centres, lo)  # bins whose centre lies below lo
        upto = np.searchsorted(self.centres, hi, side="right")  # bins whose centre lies at or below hi
        clip_low = s2[below] - 2 * lo * s1[below] + lo**2 * n[below]
        clip_high = (s2[-1] - s2[upto]) - 2 * hi * (s1[-1] - s1[upto]) + hi**2 * (n[-1] - n[upto])
        noise = (n[upto] - n[below]) * ((hi - lo) / self.levels) ** 2 / 12
        return np.maximum(clip_low, 0) + np.maximum(clip_high, 0) + noise
