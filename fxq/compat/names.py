"""torch.ao's qconfig and observer names, taking torch.ao's arguments: ``MinMaxObserver.with_args(dtype=...,
qscheme=torch.per_tensor_symmetric)`` gives fxq's ``MinMaxObserver.with_args(dtype=..., symmetric=True)``;
``QConfig`` and ``QConfigMapping`` accept these, fxq's own factories and torch.ao's objects alike."""

from __future__ import annotations

from typing import Any

import torch

import fxq
from fxq.observers.base import ObserverFactory
from fxq.qconfig import get_default_dynamic_qconfig, get_default_embedding_qconfig
from fxq.qconfig import get_default_qconfig as _fxq_default_qconfig
from fxq.qconfig_mapping import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from fxq.torch_ao_objects import float16_or, observer_factory, translate_observer, translate_qconfig


class TorchAoObserverName:
    """An fxq observer under its torch.ao name: ``with_args`` and calls take torch.ao's keyword arguments."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def with_args(self, **kwargs: Any) -> ObserverFactory:
        return observer_factory(self.__name__, kwargs)

    def __call__(self, **kwargs: Any):
        return observer_factory(self.__name__, kwargs)()

    def __repr__(self) -> str:
        return f"fxq.compat.{self.__name__}"


MinMaxObserver = TorchAoObserverName("MinMaxObserver")
PerChannelMinMaxObserver = TorchAoObserverName("PerChannelMinMaxObserver")
MovingAverageMinMaxObserver = TorchAoObserverName("MovingAverageMinMaxObserver")
MovingAveragePerChannelMinMaxObserver = TorchAoObserverName("MovingAveragePerChannelMinMaxObserver")
HistogramObserver = TorchAoObserverName("HistogramObserver")
PlaceholderObserver = TorchAoObserverName("PlaceholderObserver")

# torch.ao's defaults, spelled as torch.ao spells them (7-bit activations where torch.ao reduces the range)
default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_weight_observer = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                         qscheme=torch.per_channel_symmetric)
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_dynamic_qconfig = get_default_dynamic_qconfig(torch.qint8)
float16_dynamic_qconfig = get_default_dynamic_qconfig(torch.float16)
float_qparams_weight_only_qconfig = get_default_embedding_qconfig(8)
float_qparams_weight_only_qconfig_4bit = get_default_embedding_qconfig(4)


def QConfig(activation, weight=None) -> fxq.QConfig:  # noqa: N802 - torch.ao's name for its QConfig class
    """fxq's QConfig from torch.ao-style factories (these names, torch.ao's own partials, or fxq's)."""
    return float16_or(fxq.QConfig(activation=_factory(activation),
                                  weight=None if weight is None else _factory(weight)))


def _factory(value):
    return value.with_args() if isinstance(value, TorchAoObserverName) else translate_observer(value)


class QConfigMapping(fxq.QConfigMapping):
    """fxq's QConfigMapping whose setters also take torch.ao's QConfig objects."""

    def set_global(self, qconfig):
        return super().set_global(translate_qconfig(qconfig))

    def set_object_type(self, object_type, qconfig):
        return super().set_object_type(object_type, translate_qconfig(qconfig))

    def set_module_name_regex(self, regex, qconfig):
        return super().set_module_name_regex(regex, translate_qconfig(qconfig))

    def set_module_name(self, module_name, qconfig):
        return super().set_module_name(module_name, translate_qconfig(qconfig))

    def set_module_name_object_type_order(self, module_name, object_type, index, qconfig):
        return super().set_module_name_object_type_order(module_name, object_type, index, translate_qconfig(qconfig))


def get_default_qconfig(backend: str = "x86", version: int = 0) -> fxq.QConfig:
    """fxq's default static qconfig for ``backend`` ("x86", "fbgemm" or "qnnpack"); torch.ao's ``version`` 0."""
    _check_version(version, 0)
    return _fxq_default_qconfig(backend)


def get_default_qat_qconfig(backend: str = "x86", version: int = 1) -> fxq.QConfig:
    """fxq's default QAT qconfig for ``backend`` (what ``get_default_qat_qconfig_mapping`` applies globally)."""
    _check_version(version, 0, 1)
    return get_default_qat_qconfig_mapping(backend).global_qconfig


def _check_version(version: int, *known: int) -> None:
    if version not in known:
        raise fxq.ConfigError(f"version={version!r}: fxq has one default qconfig per backend (torch.ao's versions "
                              f"{', '.join(map(str, known))} map to it)")


__all__ = ["QConfig", "QConfigMapping", "get_default_qconfig", "get_default_qat_qconfig",
           "get_default_qconfig_mapping", "get_default_qat_qconfig_mapping"]
