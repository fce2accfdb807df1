"""QConfig: how to observe one op's activations and weight, as two observer factories.

A QConfig holds factories (``MinMaxObserver.with_args(...)``), not observers, because every op it applies to
needs observers of its own. It compares by value, so rules and dumps can say "the same qconfig", and its repr
has no object addresses, so dumps that print it are deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fxq.errors import ConfigError


@dataclass(frozen=True)
class QConfig:
    """Observer factories for an op's activations (inputs and output) and its weight (None: no weight).

    Raises:
        ConfigError: a factory is an observer instance (one instance cannot serve every op) or not callable.
    """

    activation: Callable[[], nn.Module]
    weight: Callable[[], nn.Module] | None = None

    def __post_init__(self) -> None:
        for role in ("activation", "weight"):
            factory = getattr(self, role)
            if factory is None and role == "weight":
                continue
            if isinstance(factory, nn.Module):
                kind = type(factory).__name__
                raise ConfigError(f"QConfig.{role} must be an observer factory, not an observer instance "
                                  f"({kind}(...)): every op needs observers of its own; "
                                  f"use {kind}.with_args(...)")
            if not callable(factory):
                raise ConfigError(f"QConfig.{role} must be an observer factory such as "
                                  f"MinMaxObserver.with_args(...); got {type(factory).__name__} {factory!r}")

    def __repr__(self) -> str:
        return f"QConfig(activation={_describe(self.activation)}, weight={_describe(self.weight)})"

    @property
    def is_dynamic(self) -> bool:
        """Activations are quantized at run time (a ``PlaceholderObserver(is_dynamic=True)`` activation)."""
        return bool(getattr(self.activation, "kwargs", {}).get("is_dynamic", False))

    @property
    def is_weight_only(self) -> bool:
        """Only the weight is quantized and activations stay float (a ``PlaceholderObserver`` of dtype float32 for
        activations, as torch.ao's ``float_qparams_weight_only_qconfig`` has): embedding tables in 8- or 4-bit
        rows."""
        from fxq.observers import PlaceholderObserver

        kwargs = getattr(self.activation, "kwargs", {})
        return getattr(self.activation, "cls", None) is PlaceholderObserver \
            and kwargs.get("dtype") == torch.float32 and not kwargs.get("is_dynamic", False)

    @property
    def weight_only_bits(self) -> int:
        """For a weight-only qconfig: 4 if its weight observer's dtype is torch.quint4x2, else 8."""
        return 4 if getattr(self.weight, "kwargs", {}).get("dtype") == torch.quint4x2 else 8

    @property
    def dynamic_dtype(self) -> torch.dtype:
        """For a dynamic qconfig: torch.qint8 (int8 weights and activations) or torch.float16 (fp16 weights)."""
        dtype = getattr(self.activation, "kwargs", {}).get("dtype", torch.quint8)
        return torch.float16 if dtype == torch.float16 else torch.qint8


def _describe(factory: Callable | None) -> str:
    """A factory's name without object addresses (observer factories already print that way)."""
    if factory is None or hasattr(factory, "kwargs") and hasattr(factory, "cls"):
        return repr(factory)
    if isinstance(factory, functools.partial):
        args = [_describe(arg) if callable(arg) else repr(arg) for arg in factory.args]
        args += [f"{key}={value!r}" for key, value in sorted(factory.keywords.items())]
        return f"partial({', '.join([_describe(factory.func), *args])})"
    return getattr(factory, "__qualname__", type(factory).__qualname__)


def check_backend(backend: str) -> str:
    """The built-in backend whose default qconfigs ``backend`` takes (itself, or for a plugin's backend the one
    running its quantized engine); ConfigError listing the backends for an unknown name."""
    from fxq.backends import qconfig_family

    return qconfig_family(backend)


def get_default_qconfig(backend: str = "x86") -> QConfig:
    """The default static-quantization QConfig for ``backend`` ("x86" or its alias "fbgemm", "qnnpack",
    "reference").

    Activations: histogram observer, affine quint8, full 8-bit range. Weights: symmetric qint8, one scale per
    output channel on every backend; on x86/fbgemm in 7 bits ([-64, 63]). fbgemm adds pairs of uint8 x int8
    products in 16 bits on CPUs without VNNI, and full-range operands can overflow; one of the two must give
    up a bit. torch.ao takes it from the activations (``reduce_range``); fxq takes it from the weights, which
    have a scale per channel, so the bit costs them less than it costs a per-tensor activation: on a BERT-base
    encoder (Hugging Face BertModel, 12 layers) the output SQNR goes from 20.1 dB to 23.8 dB. torch.ao's
    qnnpack default uses one weight scale per tensor; fxq keeps per channel there too, which qnnpack's int8
    kernels also run.

    Raises:
        ConfigError: an unknown backend (the message lists the known ones).
    """
    from fxq.observers import HistogramObserver

    backend = check_backend(backend)
    return QConfig(activation=HistogramObserver.with_args(dtype=torch.quint8), weight=default_weight(backend))


def get_default_dynamic_qconfig(dtype: torch.dtype = torch.qint8, backend: str = "x86") -> QConfig:
    """Dynamic quantization through prepare/convert: no activation observers (nothing to calibrate), the weight
    quantized at convert. ``dtype`` torch.qint8 (int8 weights, activations quantized per call) or torch.float16
    (fp16 weights). On x86/fbgemm int8 weights use 7 bits so full 8-bit activations cannot overflow the
    kernels' 16-bit sums on CPUs without VNNI (see ``fxq.dynamic``)."""
    from fxq.observers import PlaceholderObserver

    backend = check_backend(backend)
    if dtype == torch.float16:
        return QConfig(activation=PlaceholderObserver.with_args(dtype=torch.float16, is_dynamic=True),
                       weight=PlaceholderObserver.with_args(dtype=torch.float16))
    if dtype != torch.qint8:
        raise ConfigError(f"dynamic quantization takes torch.qint8 or torch.float16, not {dtype}")
    return QConfig(activation=PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True),
                   weight=default_weight(backend))


def get_default_embedding_qconfig(bits: int = 8) -> QConfig:
    """Weight-only quantization of embedding tables: every row in ``bits`` (8 or 4) with its own scale and
    offset, looked up by torch's row-wise kernels (``fxq.nn.quantized.QuantizedEmbedding``). A lookup's output
    is float, as are its indices: there is no activation to observe. Tables are often a model's largest weights
    (a quarter of BERT-base's); 8-bit rows cost all-MiniLM-L6-v2 nothing measurable (docs/recipes.md)."""
    from fxq.observers import PlaceholderObserver

    if bits not in (8, 4):
        raise ConfigError(f"embedding tables are stored in 8- or 4-bit rows, not {bits}")
    return QConfig(activation=PlaceholderObserver.with_args(dtype=torch.float32),
                   weight=PlaceholderObserver.with_args(dtype=torch.quint8 if bits == 8 else torch.quint4x2))


def default_weight(backend: str):
    """The default weight observer factory: symmetric qint8 per output channel, in 7 bits on x86/fbgemm (see
    ``get_default_qconfig``). Static, dynamic and QAT defaults all use it."""
    from fxq.observers import PerChannelMinMaxObserver

    narrow = {"quant_min": -64, "quant_max": 63} if _reduces(backend) else {}
    return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, **narrow)


def _reduces(backend: str) -> bool:
    """Whether ``backend``'s kernels need one operand narrowed to 7 bits (see ``get_default_qconfig``)."""
    return backend in ("x86", "fbgemm")
