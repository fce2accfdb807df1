"""MSE observer: the shrunk range whose quantizer, the one convert will build, has the least squared error
over the histogram, computed in closed form rather than modelled."""

from __future__ import annotations

import numpy as np
import torch

from fxq.observers.shrink import ShrinkSearchObserver
from fxq.qparams import compute_qparams


class MSEObserver(ShrinkSearchObserver):
    """Per-tensor range minimising the mean squared quantization error (rounding plus clipping) of the
    values seen, over ``candidates`` ranges shrunk from the seen one toward 0 (default quint8 affine).

    How it differs from ``HistogramObserver``, which also minimises a squared error over a histogram: that
    one searches every pair of bin edges but models the error (rounding noise a step squared over 12, each
    bin's values at its centre, the range's ends as they are before the zero point is rounded). This one
    tries fewer ranges but scores each with the exact error of the quantizer convert will use for it (the
    same ``compute_qparams``, so the rounded zero point, the 0 the range is widened to and the grid's real
    ends all count), integrating the rounding error exactly over values spread evenly within each bin. The
    model breaks down where a step is not small against the data's shape: few levels (4-bit, custom narrow
    ranges) or data bunched onto a few values; there this observer picks better ranges.

    Args:
        **kwargs: ``bins``, ``candidates``, ``lowest`` (see ``ShrinkSearchObserver``) and the settings of
            ``Observer``.
    """

    def _costs(self, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
        scale, zero_point = compute_qparams(torch.from_numpy(lows).float(), torch.from_numpy(highs).float(),
                                            self.quant_min, self.quant_max, self.dtype, self.symmetric,
                                            self.eps, custom_range=self.custom_range)
        step = scale.double().numpy()[:, None]
        low, high = float(self.min_val), float(self.max_val)
        edges = np.linspace(low, high, self.bins + 1)
        levels = edges[None, :] / step + zero_point.double().numpy()[:, None]  # bin edges in quantized units
        integral = np.diff(_error_integral(levels, self.quant_min, self.quant_max), axis=1)
        density = self.histogram.numpy() / ((high - low) / self.bins)  # values per unit, even within a bin
        return step[:, 0] ** 3 * (integral @ density)


def _error_integral(y: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """An antiderivative of (y - clamp(round(y), qmin, qmax))^2, the squared error of a value y measured in
    quantization steps: per whole step 1/12, within a step (r^3 + 1/8) / 3 for r = y - round(y) in
    [-1/2, 1/2], and beyond the grid's ends the clipping error's (distance^3) / 3. Continuous, so its
    difference across a bin is the exact integral over that bin."""
    r = np.clip(y, qmin, qmax)
    nearest = np.round(r)
    r -= nearest
    below, above = np.minimum(y - qmin, 0), np.maximum(y - qmax, 0)
    return nearest / 12 + (r * r * r + below * below * below + above * above * above + 0.125) / 3
