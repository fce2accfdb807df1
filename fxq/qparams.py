"""Scale and zero-point arithmetic: the quantized range of a dtype and the qparams for an observed range.

The formulas agree bit for bit with torch.ao's observers for the same settings (tests compare them), so a
model quantized by fxq and by torch.ao from the same observed ranges gets the same qparams.
"""

from __future__ import annotations

import torch

from fxq.errors import ConfigError

_FULL_RANGE = {
    torch.quint8: (0, 255),
    torch.qint8: (-128, 127),
    torch.qint32: (-(2**31), 2**31 - 1),
    torch.quint4x2: (0, 15),
}


def qrange(dtype: torch.dtype, quant_min: int | None = None, quant_max: int | None = None,
           reduce_range: bool = False) -> tuple[int, int]:
    """The (qmin, qmax) an observer uses: the dtype's range (halved by ``reduce_range``) or a custom one.

    ``reduce_range`` drops one bit (x86 kernels accumulate in 16 bits on older CPUs); with a custom range it
    halves both ends, as torch.ao does.
    """
    if dtype not in _FULL_RANGE:
        raise ConfigError(f"observers quantize to {', '.join(map(str, _FULL_RANGE))}; got dtype {dtype}")
    low, high = _FULL_RANGE[dtype]
    if (quant_min is None) != (quant_max is None):
        raise ConfigError("give both quant_min and quant_max, or neither")
    if quant_min is not None:
        if not low <= quant_min < quant_max <= high:
            raise ConfigError(f"quant_min={quant_min}, quant_max={quant_max} must satisfy "
                              f"{low} <= quant_min < quant_max <= {high} for {dtype}")
        if not quant_min <= 0 <= quant_max:
            raise ConfigError(f"a custom quantized range must include 0 (so that 0.0 is exact); got "
                              f"[{quant_min}, {quant_max}]")
        return (quant_min // 2, quant_max // 2) if reduce_range else (quant_min, quant_max)
    if reduce_range and dtype == torch.quint8:
        return 0, 127
    if reduce_range and dtype == torch.qint8:
        return -64, 63
    return low, high


def compute_qparams(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int, dtype: torch.dtype,
                    symmetric: bool, custom_range: bool = False,
                    eps: float = torch.finfo(torch.float32).eps) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero_point int64) for the range [min_val, max_val], elementwise for per-channel ranges.

    The range is first widened to include 0 so that zero (padding, ReLU output) is exact. Symmetric schemes
    centre the range: zero point 0 for signed types, 128 for quint8 (the midpoint of a custom range).
    Per-tensor results have shape [1], like torch.ao's.
    """
    min_neg = torch.minimum(min_val, torch.zeros_like(min_val)).float()
    max_pos = torch.maximum(max_val, torch.zeros_like(max_val)).float()
    eps_t = torch.tensor(eps, dtype=torch.float32)
    if symmetric:
        bound = torch.maximum(-min_neg, max_pos)
        scale = torch.maximum(bound / (float(qmax - qmin) / 2), eps_t)
        if dtype == torch.quint8:
            centre = (qmin + qmax) // 2 if custom_range else 128
            zero_point = torch.full(scale.shape, centre, dtype=torch.int64)
        else:
            zero_point = torch.zeros(scale.shape, dtype=torch.int64)
    else:
        scale = torch.maximum((max_pos - min_neg) / float(qmax - qmin), eps_t)
        zero_point = (qmin - torch.round(min_neg / scale).to(torch.int)).clamp(qmin, qmax).to(torch.int64)
    if scale.dim() == 0:
        scale, zero_point = scale.reshape(1), zero_point.reshape(1)
    return scale, zero_point
