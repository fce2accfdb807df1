"""Greedy histogram observer: the range torch.ao's ``HistogramObserver`` picks, so that a torch.ao mapping run
through fxq gets torch.ao's activation qparams (``fxq.torch_ao_objects`` maps torch.ao's name here).

It differs from fxq's ``HistogramObserver`` in two ways that change the chosen range by several percent:

- the search is greedy: starting from the whole histogram, each step drops the end whose next 1e-5 quantile
  lies further inside (in bins), and the walk stops at the first step that raises the expected error, not at
  the global minimum (the first step is always taken: the whole range is never scored);
- the error model quantizes onto the dtype's full grid (256 cells for 8 bits, even where ``reduce_range`` or a
  custom range uses fewer), each value going to the centre of its cell, the end cells taking what lies beyond.

When the range grows, the old counts are re-binned as torch.ao does: each bin is cut into 16 equal pieces and
each piece moved whole to the new bin holding its midpoint.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from fxq.observers.histogram_base import HistogramCollector
from fxq.observers.mse import _error_integral
from fxq.qparams import qrange

_QUANTILE_STEP = 1e-5
_PIECES_PER_BIN = 16


class GreedyHistogramObserver(HistogramCollector):
    """torch.ao's ``HistogramObserver`` range choice (per tensor; default quint8 affine; see the module
    docstring).

    Args:
        bins: histogram resolution over the range seen so far.
        **kwargs: the settings of ``Observer``.
    """

    def _widen(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """Grow the range to cover [low, high], moving the counts held so far (a single value stays a
        zero-width range, whose batch ``histc`` counts in its middle bin)."""
        if self.has_data:
            low, high = torch.minimum(low, self.min_val), torch.maximum(high, self.max_val)
            self.histogram = _rebin(self.histogram, self.min_val, self.max_val, low, high)
        self.min_val.copy_(low)
        self.max_val.copy_(high)

    def _merge(self, other: GreedyHistogramObserver) -> None:
        """Both histograms re-binned onto the union of the ranges as a growing range is: the same as feeding
        ``other``'s batches after this one's when ``other``'s range is the union and it saw one batch."""
        self._widen(other.min_val, other.max_val)
        self.histogram += _rebin(other.histogram, other.min_val, other.max_val, self.min_val, self.max_val)

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range the greedy search stops at, in float32 arithmetic as torch.ao computes it."""
        low, high = self.min_val.float(), self.max_val.float()
        if high == low:
            return low.clone(), high.clone()
        lowest, highest = qrange(self.dtype)  # the dtype's whole grid, whatever range the qparams will use
        start, end = _greedy_search(self.histogram.double().numpy(), highest - lowest + 1)
        width = (high - low) / self.bins
        return low + width * start, low + width * (end + 1)


def _greedy_search(counts: np.ndarray, cells: int) -> tuple[int, int]:
    """The [start, end] bins (inclusive) where the walk stops: the last candidate before the error first
    rises, or the whole histogram if no candidate is ever made."""
    error = _CellError(counts, cells)
    best, best_error = (0, counts.size - 1), float("inf")
    for start, end in _walk(counts):
        candidate_error = error(start, end)
        if candidate_error > best_error:
            break
        best, best_error = (start, end), candidate_error
    return best


def _walk(counts: np.ndarray):
    """The candidate [start, end] pairs of the walk, in order. Each step moves one quantile bound 1e-5
    inwards: the lower one when its quantile's bin lies further from ``start`` than the upper one's from
    ``end``, else the upper one. Quantile thresholds and the cumulative counts are compared in float32, the
    precision torch.ao compares them in, so ties resolve the same way."""
    cumulative = np.cumsum(counts).astype(np.float32).tolist()
    total = float(np.float32(cumulative[-1]))
    start, end = 0, len(cumulative) - 1
    alpha, beta = 0.0, 1.0
    while alpha < beta:
        next_alpha, next_beta = alpha + _QUANTILE_STEP, beta - _QUANTILE_STEP
        lower = bisect.bisect_left(cumulative, float(np.float32(next_alpha * total)))
        upper = bisect.bisect_right(cumulative, float(np.float32(next_beta * total))) - 1
        lower, upper = min(max(lower, start), end), max(min(upper, end), start)
        if lower - start > end - upper:
            start, alpha = lower, next_alpha
        elif upper != end:
            end, beta = upper, next_beta
        else:
            beta = next_beta
            continue
        yield start, end


class _CellError:
    """The expected squared error of a histogram's values (spread evenly within each bin) when the range
    [start bin, end bin] is cut into ``cells`` equal cells and each value goes to its cell's centre, values
    outside the range to the nearer end cell's. In squared bin widths: candidates are compared, not measured."""

    def __init__(self, counts: np.ndarray, cells: int) -> None:
        self.counts, self.cells = counts, cells
        self.edges = np.arange(counts.size + 1, dtype=np.float64)

    def __call__(self, start: int, end: int) -> float:
        cells_per_bin = self.cells / (end - start + 1)
        position = (self.edges - start) * cells_per_bin - 0.5  # bin edges in cells, cell centres on integers
        integral = np.diff(_error_integral(position, 0, self.cells - 1))  # squared cells, per bin
        return float(integral @ self.counts) / cells_per_bin**3


def _rebin(counts: torch.Tensor, old_low: torch.Tensor, old_high: torch.Tensor, new_low: torch.Tensor,
           new_high: torch.Tensor) -> torch.Tensor:
    """``counts`` over [old_low, old_high] moved onto as many bins over [new_low, new_high] (which contains
    it): each bin cut into 16 equal pieces, each piece moved whole to the bin holding its midpoint. Edges and
    midpoints are placed in float32 as torch.ao places them, so a midpoint within rounding of an edge lands on
    the side it lands on in torch.ao."""
    if old_low == new_low and old_high == new_high:
        return counts.clone()
    bins = counts.numel()
    pieces = bins * _PIECES_PER_BIN
    midpoints = torch.linspace(old_low, old_high, pieces + 1)[:-1] + (old_high - old_low) / pieces / 2
    edges = torch.linspace(new_low, new_high, bins + 1)
    target = (torch.searchsorted(edges, midpoints, right=True) - 1).clamp(0, bins - 1)
    return torch.bincount(target, weights=counts.repeat_interleave(_PIECES_PER_BIN) / _PIECES_PER_BIN,
                          minlength=bins)
