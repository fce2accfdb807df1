"""Scale and zero-point arithmetic: the quantized range of a dtype and the qparams for an observed range.

The formulas agree bit for bit with torch.ao's observers for the same settings (tests compare them), so a
model quantized by fxq and by torch.ao from the same observed ranges gets the same qparams. The one deliberate
difference: zero points are computed in int64, where torch.ao's int32 arithmetic overflows for qint32 ranges
far from zero.
"""

from __future__ import annotations

import torch

from fxq.errors import ConfigError

FLOAT32_EPS = torch.finfo(torch.float32).eps

_FULL_RANGE = {
    torch.quint8: (0, 255),
    torch.qint8: (-128, 127),
    torch.qint32: (-(2**31), 2**31 - 1),
    torch.quint4x2: (0, 15),
}
_REDUCED_RANGE = {torch.quint8: (0, 127), torch.qint8: (-64, 63)}


def qrange(dtype: torch.dtype, quant_min: int | None = None, quant_max: int | None = None,
           reduce_range: bool = False) -> tuple[int, int]:
    """The (qmin, qmax) an observer quantizes to: the dtype's range or a custom one.

    ``reduce_range`` drops one bit so x86 kernels without VNNI cannot overflow their 16-bit accumulators.
    As in torch.ao it applies to the 8-bit default ranges and halves a custom range (rounding down), and it
    leaves the qint32 and quint4x2 defaults alone.

    Raises:
        ConfigError: unknown dtype, only one of quant_min/quant_max, or a custom range that does not fit the
            dtype, excludes 0 or has a single level (also once halved).
    """
    if dtype not in _FULL_RANGE:
        raise ConfigError(f"observers quantize to {', '.join(map(str, _FULL_RANGE))}; got dtype {dtype}")
    if (quant_min is None) != (quant_max is None):
        raise ConfigError(f"give both quant_min and quant_max, or neither; got quant_min={quant_min}, "
                          f"quant_max={quant_max}")
    if quant_min is not None and not all(isinstance(q, int) and not isinstance(q, bool) for q in (quant_min, quant_max)):
        raise ConfigError(f"quant_min and quant_max are integer levels; got quant_min={quant_min!r}, "
                          f"quant_max={quant_max!r}")
    if quant_min is None:
        return _REDUCED_RANGE.get(dtype, _FULL_RANGE[dtype]) if reduce_range else _FULL_RANGE[dtype]
    low, high = _FULL_RANGE[dtype]
    if quant_min >= quant_max:
        raise ConfigError(f"quant_min={quant_min} must be below quant_max={quant_max}")
    if not (low <= quant_min and quant_max <= high):
        raise ConfigError(f"quant_min={quant_min}, quant_max={quant_max} do not fit {dtype}, whose range is "
                          f"[{low}, {high}]")
    if not quant_min <= 0 <= quant_max:
        raise ConfigError(f"a custom quantized range must include 0 (so that 0.0 is exact); got "
                          f"[{quant_min}, {quant_max}]")
    if reduce_range:
        halved = quant_min // 2, quant_max // 2
        if halved[0] == halved[1]:
            raise ConfigError(f"reduce_range halves [{quant_min}, {quant_max}] to {list(halved)}, a single "
                              "level; widen the range or drop reduce_range")
        quant_min, quant_max = halved
    return quant_min, quant_max


def check_symmetric_range(dtype: torch.dtype, qmin: int, qmax: int) -> None:
    """A symmetric scheme on a signed dtype fixes the zero point at 0, so its range must be balanced around 0
    (``[-128, 127]``, ``[-127, 127]``): ``[0, 127]`` would lose every negative value and half the positive levels.

    Raises:
        ConfigError: an unbalanced signed range.
    """
    if dtype in (torch.qint8, torch.qint32) and abs(qmin + qmax) > 1:
        raise ConfigError(f"a symmetric {dtype} scheme puts zero at level 0, so its range must be balanced around "
                          f"0; got [{qmin}, {qmax}]. Use a range such as [{-max(abs(qmin), abs(qmax))}, "
                          f"{max(abs(qmin), abs(qmax))}], or symmetric=False")


def compute_qparams(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int, dtype: torch.dtype,
                    symmetric: bool, eps: float = FLOAT32_EPS, *,
                    custom_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero_point int64) for the range [min_val, max_val], elementwise for per-channel ranges.

    The range is first widened to include 0, so that zero (padding, ReLU output) is exact, and the scale is at
    least ``eps``. Symmetric schemes centre the range on 0: zero point 0 for signed types; for quint8, 128 for
    the dtype's own range and the midpoint rounded down for a ``custom_range`` (torch.ao's rule, which this
    flag exists to reproduce). Per-tensor (0-d) results have shape [1], like torch.ao's.
    """
    zero = torch.zeros((), dtype=torch.float32)
    min_neg = torch.minimum(min_val.float(), zero)
    max_pos = torch.maximum(max_val.float(), zero)
    eps_t = torch.tensor(eps, dtype=torch.float32)
    if symmetric:
        bound = torch.maximum(-min_neg, max_pos)
        scale = torch.maximum(bound / (float(qmax - qmin) / 2), eps_t)
        centre = 0
        if dtype == torch.quint8:
            centre = (qmin + qmax) // 2 if custom_range else 128
        zero_point = torch.full(scale.shape, centre, dtype=torch.int64)
    else:
        scale = torch.maximum((max_pos - min_neg) / float(qmax - qmin), eps_t)
        zero_point = (qmin - torch.round(min_neg / scale).long()).clamp(qmin, qmax)
    if scale.dim() == 0:
        scale, zero_point = scale.reshape(1), zero_point.reshape(1)
    return scale, zero_point
