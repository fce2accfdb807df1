"""Per-channel MSE observer for weights: per output channel, the shrunk range with the least squared
quantization error, searched for all channels at once."""

from __future__ import annotations

from typing import Any

import torch

from fxq.observers.minmax import MinMaxObserver, _PerChannel
from fxq.observers.shrink import check_shrink_options, outer_range, shrink_factors
from fxq.qparams import compute_qparams


class PerChannelMSEObserver(_PerChannel, MinMaxObserver):
    """Per channel, the range among ``candidates`` shrunk copies of the channel's min/max (symmetric: of its
    absmax) that minimises the channel's squared quantization error (default symmetric qint8, ch_axis 0).

    A candidate's error is counted in three parts: the values beyond it, clipped to its ends, exactly; the
    values within half a step of zero, which round to 0, exactly (their error is their square); every other
    value a step squared over 12, the mean rounding error of values spread over the steps. Scoring every
    value's rounding exactly would quantize the whole weight once per candidate (a hundred passes over a
    4096x4096 weight take seconds). The zero cell is what makes the model hold for heavy-tailed weights:
    most of their values sit within a step of zero, where the s^2/12 model would overstate what a smaller
    step saves and shrink too far (Student-t(3) weights in 7 bits: 21% more error than the best candidate
    without it, 0.1% with it). Only the values beyond the smallest candidate or within the largest half
    step are read individually, so the search costs a few passes over the weight whatever the number of
    candidates.

    It keeps the values it has seen (channel-major, in the ``values`` buffer) so that merging is exact: meant
    for weights, which are seen once; as an activation observer it would hold every batch.

    Args:
        ch_axis: the channel dimension.
        candidates: how many shrink factors to try, from 1 down to ``lowest`` (evenly in log scale).
        lowest: the smallest fraction of the channel's range to try.
        **kwargs: the settings of ``Observer`` (``dtype``, ``symmetric``, ...).
    """

    def __init__(self, candidates: int = 100, lowest: float = 0.5, **kwargs: Any) -> None:
        check_shrink_options(type(self).__name__, candidates, lowest)
        super().__init__(**kwargs)
        self.candidates, self.lowest = candidates, float(lowest)
        self.register_buffer("values", torch.empty(0, 0))

    def _observe(self, x: torch.Tensor) -> None:
        super()._observe(x)  # checks the axis, the channel count and finiteness; keeps min/max
        channels = x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1).float()
        self.values = torch.cat([self.values, channels], dim=1) if self.values.numel() else channels.clone()

    def _merge(self, other: PerChannelMSEObserver) -> None:
        had_data = self.has_data
        super()._merge(other)
        self.values = torch.cat([self.values, other.values], dim=1) if had_data else other.values.clone()

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel, the best shrunk range, searched now."""
        low, high = outer_range(self.min_val.double(), self.max_val.double(), self.symmetric)
        factors = torch.from_numpy(shrink_factors(self.candidates, self.lowest))
        lows, highs = (low[:, None] * factors).float(), (high[:, None] * factors).float()
        scale, _ = compute_qparams(lows, highs, self.quant_min, self.quant_max, self.dtype, self.symmetric,
                                   self.eps, custom_range=self.custom_range)
        step = scale.double()
        half_step = step[:, 0] / 2
        channel, values = _read_individually(self.values, low * factors[-1], high * factors[-1], half_step)
        clipped, clip_error = _clipping(channel, values, low, high, factors)
        zeroed, zero_error = _zero_cell(channel, values, half_step, factors)
        noise = (self.values.shape[1] - clipped - zeroed) * step**2 / 12
        best = torch.argmin(clip_error + zero_error + noise, dim=1)  # the first of equals: the widest range
        rows = torch.arange(len(best))
        return lows[rows, best], highs[rows, best]

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "candidates": self.candidates, "lowest": self.lowest}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "values" in state_dict:  # sized by what was seen
            self.values.resize_(state_dict[prefix + "values"].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _read_individually(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                       half_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(channel, value) of the values below ``low``, above ``high`` or within ``half_step`` of zero (per
    channel): the only ones whose error depends on the candidate in a way the step^2/12 model misses."""
    magnitude = values.abs()
    near = torch.minimum(-low, high).float()[:, None]  # a magnitude beyond which either end may be passed
    channel, index = torch.nonzero((magnitude > near) | (magnitude < half_step.float()[:, None]), as_tuple=True)
    return channel, values[channel, index].double()


def _clipping(channel: torch.Tensor, values: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
              factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel and candidate k (range [low * factors[k], high * factors[k]], factors descending): how many
    of ``values`` (of channels ``channel``) fall outside, and their summed squared distance to the range's
    nearer end.

    A value v on the side whose end is e (``high`` if v > 0, else ``low``) is clipped by exactly the
    candidates with factors[k] < v / e, the ones from some index on; sums of 1, |v| and v^2 over them give
    the squared distances."""
    upper = values > 0
    fraction = torch.where(upper, values / high[channel], values / low[channel])
    first = len(factors) - torch.searchsorted(factors.flip(0), fraction)  # the first candidate clipping it
    n, s1, s2 = _sums_from(len(low), channel * 2 + upper.long(), first, values.abs(), len(factors), 2)
    ends = torch.stack([-low, high], dim=1)[..., None] * factors  # [C, side, k], magnitudes
    error = (s2 - 2 * ends * s1 + ends**2 * n).clamp(min=0).sum(1)
    return n.sum(1), error


def _zero_cell(channel: torch.Tensor, values: torch.Tensor, half_step: torch.Tensor,
               factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel and candidate k: how many of ``values`` lie within half_step * factors[k] of zero (the
    half step of candidate k, whose step scales with its range), and the sum of their squares."""
    magnitude = values.abs()
    after = len(factors) - torch.searchsorted(factors.flip(0), magnitude / half_step[channel], right=True)
    n, _, s2 = _sums_from(len(half_step), channel, after, magnitude, len(factors), 1, reverse=True)
    return n[:, 0], s2[:, 0]


def _sums_from(channels: int, row: torch.Tensor, start: torch.Tensor, magnitude: torch.Tensor, count: int,
               groups: int, reverse: bool = False) -> tuple[torch.Tensor, ...]:
    """Sums of 1, |v| and v^2 per [channel, group, candidate] over the values counted by every candidate from
    ``start`` on (``reverse``: every candidate before ``start``), ``row`` being channel * groups + group. A
    value whose ``start`` is past the last candidate (first if ``reverse``) counts for none."""
    slot = row * (count + 1) + start
    sums = []
    for weight in (torch.ones_like(magnitude), magnitude, magnitude**2):
        total = torch.zeros(channels * groups * (count + 1), dtype=torch.float64).index_add_(0, slot, weight)
        total = total.view(channels, groups, count + 1)
        sums.append(total.flip(2).cumsum(2).flip(2)[..., 1:] if reverse else total[..., :count].cumsum(2))
    return tuple(sums)
