"""Placeholder observer: marks a value for a dtype that needs no observed range (float16 precision, or the
activation of a dynamically quantized op, whose qparams are computed at run time)."""

from __future__ import annotations

import torch

from fxq.errors import ConfigError
from fxq.observers.base import Observer


class PlaceholderObserver(Observer):
    """Records nothing; asking it for qparams is an error, because its dtype has none."""

    def __init__(self, dtype: torch.dtype = torch.float16, **kwargs) -> None:
        torch.nn.Module.__init__(self)
        self.dtype, self.symmetric, self.custom_range = dtype, False, False
        self.quant_min = self.quant_max = None
        self.reduce_range, self.eps = False, torch.finfo(torch.float32).eps
        self.node_name = "<unnamed>"

    def _observe(self, x: torch.Tensor) -> None:
        """Nothing to record."""

    @property
    def has_data(self) -> bool:
        return True

    def calculate_qparams(self):
        raise ConfigError(f"node {self.node_name!r} is marked {self.dtype}, which has no scale/zero point")

    def _merge(self, other: Observer) -> None:
        """Nothing to merge."""

    def extra_repr(self) -> str:
        return f"dtype={str(self.dtype).replace('torch.', '')}"
