"""Histogram observer: keep a histogram of everything seen, then pick the range that minimises the expected
quantization error, clipping rare outliers when that costs less than the resolution they would waste.

Calibration stays cheap: a batch costs one ``aminmax`` and one ``histc``; when the range grows, the stored
histogram is re-binned onto the wider range by interpolating its cumulative counts. The range search runs once,
when qparams are asked for.
"""

from __future__ import annotations

import torch

from fxq.observers.base import Observer


class HistogramObserver(Observer):
    """Error-minimising range from a histogram of the observed values.

    Args:
        bins: histogram resolution.
        search_step: candidate range ends are tried every ``search_step`` bins (finer is slower, rarely better).
    """

    def __init__(self, bins: int = 2048, search_step: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bins, self.search_step = bins, search_step
        self.register_buffer("histogram", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    @property
    def has_data(self) -> bool:
        return bool(torch.isfinite(self.min_val))

    def _observe(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x)
        self._check_finite(low, high)
        self.histogram += torch.histc(x.float(), self.bins, *self._widen(low, high)).double()

    def _widen(self, low: torch.Tensor, high: torch.Tensor) -> tuple[float, float]:
        """Grow the stored range to cover [low, high], re-binning the stored histogram; returns the range."""
        if self.has_data:
            new_low, new_high = torch.minimum(self.min_val, low), torch.maximum(self.max_val, high)
        else:
            new_low, new_high = low, high
        new_low, new_high = float(new_low), float(new_high)
        if new_high <= new_low:
            new_high = new_low + max(abs(new_low) * 1e-6, 1e-8)
        if self.has_data and (new_low, new_high) != (float(self.min_val), float(self.max_val)):
            self.histogram.copy_(self._rebin(new_low, new_high))
        self.min_val.fill_(new_low)
        self.max_val.fill_(new_high)
        return new_low, new_high

    def _rebin(self, new_low: float, new_high: float) -> torch.Tensor:
        """The stored histogram spread onto ``bins`` equal bins over [new_low, new_high] (which contains it)."""
        old_low, old_high = float(self.min_val), float(self.max_val)
        cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), self.histogram.cumsum(0)])
        edges = torch.linspace(new_low, new_high, self.bins + 1, dtype=torch.float64)
        position = ((edges - old_low) / (old_high - old_low) * self.bins).clamp(0, self.bins)
        index = position.floor().long().clamp(max=self.bins - 1)
        fraction = position - index
        at_edges = cumulative[index] + fraction * (cumulative[index + 1] - cumulative[index])
        return at_edges.diff()

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self._search()
        return torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)

    def _search(self) -> tuple[float, float]:
        """The [low, high] minimising rounding noise inside plus clipping error outside, over bin-edge pairs."""
        counts = self.histogram
        low, high = float(self.min_val), float(self.max_val)
        width = (high - low) / self.bins
        centres = low + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)
        # prefix sums of n, n*c, n*c^2 give each candidate's clipping error in O(1)
        zero = torch.zeros(1, dtype=torch.float64)
        n = torch.cat([zero, counts.cumsum(0)])
        nc = torch.cat([zero, (counts * centres).cumsum(0)])
        ncc = torch.cat([zero, (counts * centres * centres).cumsum(0)])
        ends = torch.arange(0, self.bins + 1, self.search_step)
        if ends[-1] != self.bins:
            ends = torch.cat([ends, torch.tensor([self.bins])])
        a, b = torch.meshgrid(ends, ends, indexing="ij")
        valid = b > a
        a, b = a[valid], b[valid]
        lo = torch.minimum(low + a * width, torch.zeros((), dtype=torch.float64))
        hi = torch.maximum(low + b * width, torch.zeros((), dtype=torch.float64))
        step = (hi - lo) / (self.quant_max - self.quant_min)
        inside = n[b] - n[a]
        noise = inside * step * step / 12
        left = ncc[a] - 2 * lo * nc[a] + lo * lo * n[a]
        right = (ncc[-1] - ncc[b]) - 2 * hi * (nc[-1] - nc[b]) + hi * hi * (n[-1] - n[b])
        if self.symmetric:
            bound = torch.maximum(-lo, hi)
            lo, hi = -bound, bound
            step = 2 * bound / (self.quant_max - self.quant_min)
            noise = inside * step * step / 12
        best = torch.argmin(noise + left + right)
        return float(lo[best]), float(hi[best])

    def _merge(self, other: HistogramObserver) -> None:
        if self.bins != other.bins:
            raise ValueError("histograms with different bin counts cannot be merged")
        counts = other.histogram.clone()
        if self.has_data:
            donor = HistogramObserver(bins=other.bins)
            donor.histogram.copy_(counts)
            donor.min_val.copy_(other.min_val)
            donor.max_val.copy_(other.max_val)
            new_low, new_high = self._widen(other.min_val, other.max_val)
            counts = donor._rebin(new_low, new_high)
        else:
            self.min_val.copy_(other.min_val)
            self.max_val.copy_(other.max_val)
        self.histogram += counts

    def _settings(self) -> tuple:
        return super()._settings() + (self.bins,)
