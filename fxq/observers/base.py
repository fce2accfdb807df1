"""The observer contract: watch float tensors during calibration, then turn what was seen into qparams.

Observers are modules (so they live in the prepared graph, deep-copy and round-trip through ``state_dict``)
whose ``forward`` returns its input unchanged. Each knows the graph node it watches (``node_name``), so every
error it raises can say where the bad data came from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxq.errors import CalibrationError, ConfigError
from fxq.qparams import compute_qparams, qrange


class ObserverFactory:
    """A picklable, comparable recipe for making observers: what ``Observer.with_args(...)`` returns."""

    def __init__(self, cls: type[Observer], kwargs: dict[str, Any]) -> None:
        self.cls, self.kwargs = cls, dict(kwargs)

    def __call__(self, **more: Any) -> Observer:
        return self.cls(**{**self.kwargs, **more})

    def with_args(self, **more: Any) -> ObserverFactory:
        return ObserverFactory(self.cls, {**self.kwargs, **more})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObserverFactory) and (self.cls, self.kwargs) == (other.cls, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.cls, tuple(sorted((k, repr(v)) for k, v in self.kwargs.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={_short(value)}" for key, value in sorted(self.kwargs.items()))
        return f"{self.cls.__name__}.with_args({args})"


def _short(value: Any) -> str:
    return str(value).replace("torch.", "") if isinstance(value, torch.dtype) else repr(value)


class Observer(nn.Module):
    """Base of fxq's observers.

    Args:
        dtype: the quantized dtype (torch.quint8, torch.qint8, torch.qint32).
        symmetric: symmetric (zero point fixed at the centre) instead of affine.
        quant_min / quant_max: a custom quantized range (both or neither).
        reduce_range: use one bit less (x86 activations on CPUs without VNNI).
        eps: the smallest scale allowed.
    """

    per_channel = False
    ch_axis: int | None = None

    def __init__(self, dtype: torch.dtype = torch.quint8, symmetric: bool = False, quant_min: int | None = None,
                 quant_max: int | None = None, reduce_range: bool = False,
                 eps: float = torch.finfo(torch.float32).eps) -> None:
        super().__init__()
        if symmetric and reduce_range and dtype == torch.quint8 and quant_min is None:
            raise ConfigError("reduce_range is not supported with symmetric quint8 (the zero point is fixed "
                              "at 128); use affine, or qint8")
        self.dtype, self.symmetric, self.reduce_range, self.eps = dtype, symmetric, reduce_range, eps
        self.custom_range = quant_min is not None
        self.quant_min, self.quant_max = qrange(dtype, quant_min, quant_max, reduce_range)
        self.node_name = "<unnamed>"

    @classmethod
    def with_args(cls, **kwargs: Any) -> ObserverFactory:
        """A factory making this observer with ``kwargs``; QConfig holds factories, not instances."""
        return ObserverFactory(cls, kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"observer of node {self.node_name!r} got a {what} value; observers only watch "
                              "float tensors")
        if x.numel():
            self._observe(x.detach())
        return x

    def _observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _check_finite(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """NaN/Inf anywhere in a tensor shows up in its min or max, so checking those two is enough."""
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise CalibrationError(
                f"calibration data reaching node {self.node_name!r} contains NaN or Inf "
                f"(min {low.min().item()}, max {high.max().item()}); check the inputs and the ops before "
                f"{self.node_name!r}, or leave it float with QConfigMapping.set_module_name(..., None)")

    @property
    def has_data(self) -> bool:
        raise NotImplementedError

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (min, max) the qparams are computed from."""
        raise NotImplementedError

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) for what was observed; CalibrationError if nothing was."""
        if not self.has_data:
            raise CalibrationError(f"observer of node {self.node_name!r} saw no data; run calibration data "
                                   "through the prepared model before convert")
        low, high = self.observed_range()
        return compute_qparams(low, high, self.quant_min, self.quant_max, self.dtype, self.symmetric,
                               self.custom_range, self.eps)

    def merge(self, other: Observer) -> None:
        """Fold ``other``'s statistics into this observer (calibration split across processes)."""
        if type(other) is not type(self) or self._settings() != other._settings():
            raise ConfigError(f"cannot merge {type(other).__name__}({other._settings()}) into "
                              f"{type(self).__name__}({self._settings()}) for node {self.node_name!r}")
        if other.has_data:
            self._merge(other)

    def _merge(self, other: Observer) -> None:
        raise NotImplementedError

    def _settings(self) -> tuple:
        return (self.dtype, self.symmetric, self.quant_min, self.quant_max, self.ch_axis)

    def extra_repr(self) -> str:
        scheme = "symmetric" if self.symmetric else "affine"
        text = f"dtype={_short(self.dtype)}, {scheme}, range=[{self.quant_min}, {self.quant_max}]"
        if self.has_data and not self.per_channel:
            low, high = self.observed_range()
            text += f", min={float(low):.4g}, max={float(high):.4g}"
        return text
