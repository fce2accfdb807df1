"""torch.ao.quantization's objects (QConfigMapping, QConfig, observer and fake-quantize ``with_args`` partials,
qconfig dicts) translated into fxq's, by duck typing: fxq never imports torch.ao, but a script that built its
mapping with torch.ao can hand it to fxq as it is.

torch.ao's per-op rules for fixed-qparam ops and input-reusing ops are dropped: fxq's backends decide those.
Observers keep their class name (``MinMaxObserver``, ``PerChannelMinMaxObserver``...) and their keyword
arguments, except ``HistogramObserver``: it becomes ``GreedyHistogramObserver``, which picks torch.ao's range
(fxq's own ``HistogramObserver`` searches differently). torch.ao's ``qscheme`` becomes fxq's ``symmetric`` flag
(a per-channel scheme on a per-tensor class, or the reverse, picks the matching class). A fake-quantize partial
becomes its observer: fxq's ``prepare_qat`` wraps observers in its own fake quantization.
"""

from __future__ import annotations

from typing import Any

import torch

from fxq import observers
from fxq.errors import ConfigError
from fxq.observers.base import Observer, ObserverFactory, observer_parameters
from fxq.qconfig import QConfig, get_default_dynamic_qconfig
from fxq.qconfig_mapping import QConfigMapping

_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
_PER_CHANNEL_TWIN = {"MinMaxObserver": "PerChannelMinMaxObserver",
                     "MovingAverageMinMaxObserver": "MovingAveragePerChannelMinMaxObserver"}
# torch.ao observers whose fxq counterpart has another name
_FXQ_NAME = {"HistogramObserver": "GreedyHistogramObserver"}
# torch.ao options with no fxq meaning: eps is float32's either way; upsample_rate is older torch.ao's (current
# torch.ao, like GreedyHistogramObserver, re-bins in sixteenths of a bin)
_IGNORED = ("eps", "factory_kwargs", "upsample_rate")


def _from_torch_ao(value: Any) -> bool:
    return type(value).__module__.startswith(("torch.ao.quantization", "torch.quantization"))


def translate_mapping(mapping: Any) -> Any:
    """fxq's QConfigMapping for a torch.ao QConfigMapping or a qconfig dict; anything else unchanged."""
    if isinstance(mapping, dict):
        return QConfigMapping.from_dict({key: _translate_rules(key, value) for key, value in mapping.items()})
    if not _from_torch_ao(mapping) or not hasattr(mapping, "object_type_qconfigs"):
        return mapping
    result = QConfigMapping()
    if mapping.global_qconfig is not None:
        result.set_global(translate_qconfig(mapping.global_qconfig))
    for kind, qconfig in mapping.object_type_qconfigs.items():
        if not _fxq_decides(qconfig):
            result.set_object_type(kind, translate_qconfig(qconfig))
    for pattern, qconfig in mapping.module_name_regex_qconfigs.items():
        result.set_module_name_regex(pattern, translate_qconfig(qconfig))
    for name, qconfig in mapping.module_name_qconfigs.items():
        result.set_module_name(name, translate_qconfig(qconfig))
    for (parent, kind, index), qconfig in mapping.module_name_object_type_order_qconfigs.items():
        result.set_module_name_object_type_order(parent, kind, index, translate_qconfig(qconfig))
    return result


def _fxq_decides(qconfig: Any) -> bool:
    """Whether ``qconfig`` is one of torch.ao's per-op defaults for what fxq's backends handle by themselves:
    fixed qparams (sigmoid, tanh, softmax...) and observers that reuse their input's (reshapes): such rules of
    torch.ao's default mappings are dropped, and fxq's own handling applies."""
    activation = getattr(qconfig, "activation", None)
    target = _partial_target(activation)
    name = (target[0] if target else activation).__name__ if (target or isinstance(activation, type)) else ""
    return name.startswith(("ReuseInput", "FixedQParams"))


def _translate_rules(key: str, value: Any) -> Any:
    if key == "":
        return translate_qconfig(value)
    return [(*rule[:-1], translate_qconfig(rule[-1])) for rule in value]


def translate_qconfig(qconfig: Any) -> QConfig | None:
    """fxq's QConfig for a torch.ao QConfig (or fxq's own, returned as it is); None stays None."""
    if qconfig is None or isinstance(qconfig, QConfig):
        return qconfig
    if not (hasattr(qconfig, "activation") and hasattr(qconfig, "weight")):
        raise ConfigError(f"expected a QConfig (fxq's or torch.ao's), got {type(qconfig).__name__} {qconfig!r}")
    return float16_or(QConfig(activation=translate_observer(qconfig.activation),
                              weight=None if qconfig.weight is None else translate_observer(qconfig.weight)))


def float16_or(qconfig: QConfig) -> QConfig:
    """``qconfig``, with torch.ao's placeholder spellings made fxq's: float16 activations and weights (torch.ao's
    ``float16_static_qconfig``) become fxq's fp16 precision (float16 weights on fbgemm's fp16 kernel, float
    activations: no CPU kernel takes float16 activations), and a float32 placeholder weight means no weight
    quantization."""
    activation, weight = (_placeholder_dtype(factory) for factory in (qconfig.activation, qconfig.weight))
    if activation == torch.float16 and weight == torch.float16:
        return get_default_dynamic_qconfig(torch.float16)
    if weight == torch.float32:
        return QConfig(activation=qconfig.activation, weight=None)
    return qconfig


def _placeholder_dtype(factory: Any) -> torch.dtype | None:
    if isinstance(factory, ObserverFactory) and factory.cls is observers.PlaceholderObserver:
        return factory.kwargs.get("dtype", torch.float32)  # torch.ao's placeholder default
    return None


def translate_observer(factory: Any) -> Any:
    """An fxq observer factory for a torch.ao observer class or ``with_args`` partial (a fake-quantize one
    becomes its observer); fxq's own factories unchanged."""
    if isinstance(factory, ObserverFactory) or (isinstance(factory, type) and issubclass(factory, Observer)):
        return factory
    target = _partial_target(factory)
    if target is None:
        if isinstance(factory, type):
            return observer_factory(factory.__name__, {})
        raise ConfigError(f"cannot translate {factory!r} into an fxq observer: pass an observer class or a "
                          "with_args(...) factory")
    cls, kwargs = target
    if "FakeQuantize" in cls.__name__:
        inner = kwargs.pop("observer", None)
        inner_name = getattr(inner, "__name__", None) or type(inner).__name__
        return observer_factory(inner_name if inner is not None else "MovingAverageMinMaxObserver",
                                {key: value for key, value in kwargs.items() if key != "observer_kwargs"})
    return observer_factory(cls.__name__, kwargs)


def observer_factory(name: str, kwargs: dict[str, Any]) -> ObserverFactory:
    """fxq's ``<name>.with_args(...)`` for torch.ao-style keyword arguments (``qscheme`` included).

    Raises:
        ConfigError: no fxq observer of that name, or an argument it does not take (naming the accepted ones).
    """
    options = {key: value for key, value in kwargs.items() if key not in _IGNORED}
    scheme = options.pop("qscheme", None)
    if scheme is not None:
        options["symmetric"] = scheme in _SYMMETRIC
        if scheme in _PER_CHANNEL:
            name = _PER_CHANNEL_TWIN.get(name, name)
        else:
            name = {twin: plain for plain, twin in _PER_CHANNEL_TWIN.items()}.get(name, name)
    if name == "PlaceholderObserver":
        options.setdefault("dtype", torch.float32)  # torch.ao's default (fxq's placeholder defaults to float16)
    cls = getattr(observers, _FXQ_NAME.get(name, name), None)
    if not (isinstance(cls, type) and issubclass(cls, Observer)):
        known = sorted(n for n in observers.__all__ if n.endswith("Observer"))
        raise ConfigError(f"torch.ao observer {name} has no fxq counterpart; fxq has {', '.join(known)}")
    if "symmetric" in options and "symmetric" not in observer_parameters(cls):
        options.pop("symmetric")  # e.g. a placeholder: the scheme does not apply
    return cls.with_args(**options)


def _partial_target(value: Any) -> tuple[type, dict] | None:
    """(class, keyword arguments) of a torch.ao ``with_args`` partial (``_PartialWrapper`` around a
    functools.partial) or a plain functools.partial; None otherwise."""
    partial = getattr(value, "p", value)
    func = getattr(partial, "func", None)
    if isinstance(func, type) and isinstance(getattr(partial, "keywords", None), dict):
        return func, dict(partial.keywords)
    return None
