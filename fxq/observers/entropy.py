"""Entropy (KL-divergence) observer: TensorRT's calibration, which keeps the clipping threshold whose quantized
histogram loses the least information about the histogram it came from."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fxq.errors import ConfigError
from fxq.observers.histogram_base import cumulative, rebin
from fxq.observers.shrink import ShrinkSearchObserver, outer_range, shrink_factors

_MAX_STEPS = 2**16


class EntropyObserver(ShrinkSearchObserver):
    """Per-tensor range minimising KL(P || Q) over ``candidates`` ranges shrunk from the seen one toward 0
    (default quint8 affine).

    TensorRT's recipe, over whole histogram bins: for a candidate range, P is the histogram's bins inside it
    with the values outside added to the end bins (clipping moves them there); Q merges the bins inside into
    as many groups as the range has quantization steps and spreads each group's total evenly over its
    non-empty bins, which is what quantizing keeps of them. Q leaves the clipped values out, so piling them on
    P's ends is a mismatch KL charges for; a range is only tried if it spans at least a bin per step. KL weighs
    a value by the share of the distribution it stands for, not by its magnitude, so it clips long tails
    harder than ``MSEObserver`` does (rare large values are a small share).

    Symmetric ranges use the histogram of |x| and half the steps, as TensorRT does (128 for int8); affine
    ranges shrink both ends toward 0 over the signed histogram, with all the dtype's steps. The bin holding 0
    is set to its neighbours' mean first (TensorRT does the same): 0 is always exact, so a spike there (ReLU
    outputs, padding) loses nothing, yet Q would spread it over its group and KL would shrink the range to
    make that group narrower.

    Args:
        **kwargs: ``bins``, ``candidates``, ``lowest`` (see ``ShrinkSearchObserver``) and the settings of
            ``Observer``.

    Raises:
        ConfigError: more than 2**16 quantization steps (qint32).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.quant_max - self.quant_min > _MAX_STEPS:
            raise ConfigError(f"EntropyObserver merges histogram bins into one group per quantization step and "
                              f"supports up to {_MAX_STEPS} steps; {self.dtype} in [{self.quant_min}, "
                              f"{self.quant_max}] has {self.quant_max - self.quant_min}")

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range of least divergence, searched now over the histogram (candidates snapped to whole bins,
        so this replaces ``ShrinkSearchObserver``'s search rather than scoring its ranges)."""
        low, high = float(self.min_val), float(self.max_val)
        if self.symmetric:
            outer_low, outer_high = 0.0, max(-low, high)
            magnitudes = np.linspace(0.0, outer_high, self.bins + 1)
            counts = np.diff(cumulative(self.histogram, low, high, magnitudes)
                             - cumulative(self.histogram, low, high, -magnitudes))
            groups = (self.quant_max - self.quant_min + 1) // 2
        else:
            outer_low, outer_high = map(float, outer_range(self.min_val.double(), self.max_val.double(), False))
            counts = rebin(self.histogram, low, high, outer_low, outer_high).numpy().copy()
            groups = self.quant_max - self.quant_min
        zero = -outer_low / (outer_high - outer_low) * self.bins  # where 0 lies, in bins
        _flatten_bin(counts, min(int(zero), self.bins - 1))
        factors = shrink_factors(self.candidates, self.lowest)
        starts = np.round(zero * (1 - factors)).astype(np.int64)
        ends = np.round(zero + factors * (self.bins - zero)).astype(np.int64)
        best = int(np.argmin(_divergence(counts, starts, ends, groups)))  # ties and all-inf: the widest
        width = (outer_high - outer_low) / self.bins
        lo, hi = outer_low + starts[best] * width, outer_low + ends[best] * width
        return self._range_of_result(-hi if self.symmetric else lo, hi)


def _flatten_bin(counts: np.ndarray, index: int) -> None:
    """Set ``counts[index]`` to the mean of its neighbours, in place."""
    neighbours = [counts[i] for i in (index - 1, index + 1) if 0 <= i < len(counts)]
    if neighbours:
        counts[index] = sum(neighbours) / len(neighbours)


def _divergence(counts: np.ndarray, starts: np.ndarray, ends: np.ndarray, groups: int) -> np.ndarray:
    """KL(P || Q) for each window of bins [starts[k], ends[k]), all windows at once (inf for windows with
    fewer bins than groups, or where Q misses what P has)."""
    candidates, bins = len(starts), len(counts)
    column = np.arange(bins)[None, :]
    inside = (column >= starts[:, None]) & (column < ends[:, None])
    lengths = np.maximum(ends - starts, 1)[:, None]
    group = np.clip((column - starts[:, None]) * groups // lengths, 0, groups - 1)
    slot = (np.arange(candidates)[:, None] * groups + group).ravel()
    kept = np.where(inside, counts[None, :], 0.0)
    filled = inside & (counts[None, :] > 0)
    group_total = np.bincount(slot, weights=kept.ravel(), minlength=candidates * groups)
    group_filled = np.bincount(slot, weights=filled.ravel(), minlength=candidates * groups)
    q = np.where(filled, (group_total / np.maximum(group_filled, 1))[slot].reshape(candidates, bins), 0.0)
    below = np.concatenate(([0.0], np.cumsum(counts)))
    p = kept.copy()
    rows = np.arange(candidates)
    p[rows, np.minimum(starts, bins - 1)] += below[starts]
    p[rows, np.maximum(ends - 1, 0)] += below[-1] - below[ends]
    p /= np.maximum(p.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    q /= np.maximum(q.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q), 0.0)
    divergence = terms.sum(1)
    divergence[ends - starts < groups] = np.inf
    return divergence
