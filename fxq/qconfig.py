"""QConfig: how to observe one op's activations and weight, as two observer factories.

A QConfig holds factories (``MinMaxObserver.with_args(...)``), not observers, because every op it applies to
needs observers of its own. It compares by value, so rules and dumps can say "the same qconfig".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fxq.errors import ConfigError
from fxq.observers import HistogramObserver, PerChannelMinMaxObserver


@dataclass(frozen=True)
class QConfig:
    """Observer factories for an op's activations (inputs and output) and its weight (None: no weight)."""

    activation: Callable[[], nn.Module]
    weight: Callable[[], nn.Module] | None = None

    def __post_init__(self) -> None:
        for role in ("activation", "weight"):
            factory = getattr(self, role)
            if factory is None and role == "weight":
                continue
            if isinstance(factory, nn.Module):
                raise ConfigError(f"QConfig.{role} must be an observer factory, not an observer instance "
                                  f"({type(factory).__name__}); use {type(factory).__name__}.with_args(...)")
            if not callable(factory):
                raise ConfigError(f"QConfig.{role} must be an observer factory such as "
                                  f"MinMaxObserver.with_args(...); got {factory!r}")

    def __repr__(self) -> str:
        return f"QConfig(activation={_name(self.activation)}, weight={_name(self.weight)})"


def _name(factory) -> str:
    if factory is None:
        return "None"
    return repr(factory) if hasattr(factory, "kwargs") else getattr(factory, "__name__", repr(factory))


_BACKENDS = ("x86", "fbgemm", "qnnpack", "reference")


def check_backend(backend: str) -> str:
    """``backend`` if it is one fxq has default qconfigs for; ConfigError listing them otherwise."""
    if backend not in _BACKENDS:
        raise ConfigError(f"no default qconfig for backend {backend!r}; known: {', '.join(_BACKENDS)}")
    return backend


def get_default_qconfig(backend: str = "x86") -> QConfig:
    """The default static-quantization QConfig for ``backend``.

    Activations: histogram observer, affine quint8; ``reduce_range`` on x86/fbgemm, whose kernels can
    overflow 16-bit intermediates with full-range activations on CPUs without VNNI; not on qnnpack or the
    reference backend. Weights: symmetric qint8, one scale per output channel.
    """
    check_backend(backend)
    reduce = backend in ("x86", "fbgemm")
    return QConfig(activation=HistogramObserver.with_args(dtype=torch.quint8, reduce_range=reduce),
                   weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True))
