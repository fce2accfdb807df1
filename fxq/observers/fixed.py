"""Fixed-qparams observer: for ops whose output range is known in advance (sigmoid in [0, 1], tanh in
[-1, 1]), the qparams are fixed, so calibration only checks the data and nothing is measured."""

from __future__ import annotations

import torch

from fxq.observers.base import Observer


class FixedQParamsObserver(Observer):
    """Always returns (``scale``, ``zero_point``); marks itself as having data on the first batch."""

    def __init__(self, scale: float, zero_point: int, dtype: torch.dtype = torch.quint8, quant_min: int = 0,
                 quant_max: int = 255, **kwargs) -> None:
        super().__init__(dtype=dtype, quant_min=quant_min, quant_max=quant_max, **kwargs)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.register_buffer("seen", torch.tensor(False))

    def _observe(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x)
        self._check_finite(low, high)
        self.seen.fill_(True)

    @property
    def has_data(self) -> bool:
        return bool(self.seen)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        super().calculate_qparams()  # raises if no data was seen
        return torch.tensor([self.scale]), torch.tensor([self.zero_point])

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        low = (self.quant_min - self.zero_point) * self.scale
        high = (self.quant_max - self.zero_point) * self.scale
        return torch.tensor(low), torch.tensor(high)

    def _merge(self, other: FixedQParamsObserver) -> None:
        self.seen.fill_(True)

    def _settings(self) -> tuple:
        return super()._settings() + (self.scale, self.zero_point)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, zero_point={self.zero_point}, dtype={str(self.dtype).replace('torch.', '')}"


# The standard fixed ranges, as factories for QConfigs.
SIGMOID_QPARAMS = FixedQParamsObserver.with_args(scale=1.0 / 256.0, zero_point=0)
TANH_QPARAMS = FixedQParamsObserver.with_args(scale=2.0 / 256.0, zero_point=128)
