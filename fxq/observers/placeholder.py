"""Placeholder observer: marks a value for a dtype that needs no observed range (float16 precision, or the
input of a dynamically quantized op, whose qparams are computed at run time)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxq.errors import ConfigError
from fxq.observers.base import Observer


class PlaceholderObserver(Observer):
    """Records nothing and has no qparams; the passes read only its ``dtype``.

    It skips ``Observer.__init__`` because there is no quantized range to resolve. It counts as having data
    (nothing needs calibrating), and asking it for qparams is a ConfigError.
    """

    def __init__(self, dtype: torch.dtype = torch.float16, is_dynamic: bool = False) -> None:
        nn.Module.__init__(self)
        self.dtype, self.is_dynamic = dtype, bool(is_dynamic)
        self.node_name = "<unnamed>"

    @property
    def has_data(self) -> bool:
        return True

    def _observe(self, x: torch.Tensor) -> None:
        """Nothing to record."""

    def _merge(self, other: Observer) -> None:
        """Nothing to merge."""

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise ConfigError(f"node {self.node_name!r} is marked {self.dtype}, which has no scale or zero "
                          "point; the pass asking for them should read the placeholder's dtype instead")

    def _settings(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "is_dynamic": self.is_dynamic}

    def extra_repr(self) -> str:
        return f"dtype={str(self.dtype).replace('torch.', '')}" + (", dynamic" if self.is_dynamic else "")
