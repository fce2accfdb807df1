"""Fixed-qparams observer: for ops whose output range is known in advance (sigmoid in [0, 1], tanh in
[-1, 1]) the qparams are fixed, so calibration only checks the data and measures nothing."""

from __future__ import annotations

from typing import Any

import torch

from fxq.errors import ConfigError
from fxq.observers.base import Observer


class FixedQParamsObserver(Observer):
    """Always gives (``scale``, ``zero_point``); still refuses NaN/Inf, and has data after its first batch.

    Requiring a batch keeps the rule that convert needs calibration, whatever the observer.
    """

    def __init__(self, scale: float, zero_point: int, dtype: torch.dtype = torch.quint8, quant_min: int = 0,
                 quant_max: int = 255, **kwargs: Any) -> None:
        super().__init__(dtype=dtype, quant_min=quant_min, quant_max=quant_max, **kwargs)
        if not (scale > 0 and self.quant_min <= zero_point <= self.quant_max):
            raise ConfigError(f"fixed qparams need scale > 0 and a zero point in [{self.quant_min}, "
                              f"{self.quant_max}]; got scale={scale}, zero_point={zero_point}")
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.register_buffer("seen", torch.tensor(False))

    @property
    def has_data(self) -> bool:
        return bool(self.seen)

    def _observe(self, x: torch.Tensor) -> None:
        self._check_finite(*torch.aminmax(x))
        self.seen.fill_(True)

    def _merge(self, other: FixedQParamsObserver) -> None:
        self.seen.fill_(True)

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range the fixed qparams represent."""
        low = (self.quant_min - self.zero_point) * self.scale
        high = (self.quant_max - self.zero_point) * self.scale
        return torch.tensor(low), torch.tensor(high)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_data()
        scale, zero_point = torch.tensor([self.scale]), torch.tensor([self.zero_point], dtype=torch.int64)
        return scale, zero_point

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "scale": self.scale, "zero_point": self.zero_point}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.6g}, zero_point={self.zero_point}"


# The standard fixed ranges, as factories for QConfigs (quint8, 0..255):
# [0, 1) for sigmoid and hardsigmoid; [-1, 1) for tanh.
SIGMOID_QPARAMS = FixedQParamsObserver.with_args(scale=1.0 / 256.0, zero_point=0)
TANH_QPARAMS = FixedQParamsObserver.with_args(scale=2.0 / 256.0, zero_point=128)
