"""Range search by shrinking: try the seen range scaled down by a grid of factors and keep the one a cost
function likes best. Shared by the observers that score ranges differently (squared error, entropy) so that
they differ only in the score, not in which ranges they consider.

The family is one-dimensional on purpose: both ends shrink together toward zero (symmetric ranges stay
symmetric). That is the search TensorRT and most PTQ toolkits run, it costs a fixed number of candidates
whatever the histogram's size, and it can only clip, never widen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fxq.errors import ConfigError
from fxq.observers.histogram_base import HistogramCollector


def shrink_factors(candidates: int, lowest: float) -> np.ndarray:
    """``candidates`` factors from 1 down to ``lowest``, evenly spaced in log scale (the same relative
    resolution for a range clipped to a tenth as for one clipped by a few percent)."""
    return lowest ** (np.arange(candidates, dtype=np.float64) / max(candidates - 1, 1))


def check_shrink_options(owner: str, candidates: Any, lowest: Any) -> None:
    """``candidates`` an int >= 1, ``lowest`` in (0, 1]."""
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
        raise ConfigError(f"{owner} needs candidates >= 1 (an int: how many shrunk ranges to try); got "
                          f"candidates={candidates!r}")
    if not (isinstance(lowest, (int, float)) and not isinstance(lowest, bool) and 0 < lowest <= 1):
        raise ConfigError(f"{owner} needs lowest in (0, 1] (the smallest fraction of the seen range to try); "
                          f"got lowest={lowest!r}")


def outer_range(low: torch.Tensor, high: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The range every candidate is a fraction of: the seen one widened to include 0 (as the qparams will
    be), and centred on 0 for a symmetric scheme. Elementwise, for per-channel ranges."""
    low, high = torch.clamp(low, max=0), torch.clamp(high, min=0)
    if symmetric:
        high = torch.maximum(-low, high)
        low = -high
    return low, high


class ShrinkSearchObserver(HistogramCollector):
    """A histogram observer whose range is the best of ``candidates`` shrunk copies of the seen range, as
    scored by ``_costs`` (lower is better; ties go to the wider range).

    Args:
        bins: histogram resolution over the range seen so far.
        candidates: how many shrink factors to try, from 1 (the seen range) down to ``lowest``.
        lowest: the smallest fraction of the seen range to try.
        **kwargs: the settings of ``Observer``.
    """

    def __init__(self, bins: int = 2048, candidates: int = 100, lowest: float = 1 / 16, **kwargs: Any) -> None:
        check_shrink_options(type(self).__name__, candidates, lowest)
        super().__init__(bins=bins, **kwargs)
        self.candidates, self.lowest = candidates, float(lowest)

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The best-scoring shrunk range, searched now over the histogram."""
        low, high = map(float, outer_range(self.min_val.double(), self.max_val.double(), self.symmetric))
        factors = shrink_factors(self.candidates, self.lowest)
        costs = self._costs(low * factors, high * factors)
        best = int(np.argmin(costs))
        return self._range_of_result(low * factors[best], high * factors[best])

    def _costs(self, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
        """The score of each candidate range [lows[i], highs[i]] for the histogram held."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "candidates": self.candidates, "lowest": self.lowest}
