"""Pass names to pass classes: built-ins load lazily, third-party passes come from the ``fxq.passes`` entry
point group or ``register_pass``. Two passes claiming one name (a built-in's included) is an error naming
both, never a silent override; so is a plugin that fails to load."""

from __future__ import annotations

import importlib

from fxq.errors import ConfigError
from fxq.graph_pass import GraphPass
from fxq.plugins import load_group, plugin_of

_BUILTIN_MODULES = {
    "normalize": "fxq.passes.normalize",
    "fuse": "fxq.passes.fuse",
    "equalize": "fxq.passes.equalize",
    "assign-qconfig": "fxq.passes.assign_qconfig",
    "assign-precision": "fxq.passes.assign_precision",
    "insert-observers": "fxq.passes.insert_observers",
    "record-input-statistics": "fxq.passes.record_input_statistics",
    "observe-clamped": "fxq.passes.observe_clamped",
    "record-calibration-sample": "fxq.passes.record_calibration_sample",
    "sensitivity-ranges": "fxq.passes.sensitivity_ranges",
    "bias-correction": "fxq.passes.bias_correction",
    "smooth": "fxq.passes.smooth",
    "mask-padding": "fxq.passes.mask_padding",
    "fake-quantize": "fxq.passes.fake_quantize",
    "reestimate-batch-norm": "fxq.passes.reestimate_batch_norm",
    "qat-to-float": "fxq.passes.qat_to_float",
    "lower": "fxq.passes.lower",
    "cleanup": "fxq.passes.cleanup",
    "name-nodes": "fxq.passes.name_nodes",
}

_REGISTRY: dict[str, type[GraphPass]] = {}


def register_pass(cls: type[GraphPass]) -> type[GraphPass]:
    """Class decorator: make ``cls`` available by ``cls.name``. Raises ConfigError on a name clash."""
    if not (isinstance(cls, type) and issubclass(cls, GraphPass)) or not cls.name:
        raise ConfigError(f"{cls!r} is not a GraphPass subclass with a non-empty `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is None and _BUILTIN_MODULES.get(cls.name, cls.__module__) != cls.__module__:
        existing = get_pass(cls.name)  # a built-in's name: its module is not imported yet
    if existing is not None and existing is not cls:
        raise ConfigError(f"pass name {cls.name!r} is already taken by {existing.__module__}."
                          f"{existing.__qualname__}; choose another name for {cls.__module__}.{cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def describe_pass(name: str) -> str:
    """``'name'``, and where a pass not built into fxq comes from (its plugin, else its class)."""
    cls = _REGISTRY.get(name)
    if cls is None or _BUILTIN_MODULES.get(name) == cls.__module__:
        return repr(name)
    return f"{name!r} (from {plugin_of(cls) or f'{cls.__module__}.{cls.__qualname__}'})"


def get_pass(name: str) -> type[GraphPass]:
    """The pass class registered as ``name``; ConfigError listing the known names if there is none (or if an
    installed plugin fails to load)."""
    load_group("fxq.passes", register_pass)  # first: a plugin taking a built-in's name is an error
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(f"no pass named {name!r}; known passes: {', '.join(available_passes())}")
    return _REGISTRY[name]


def available_passes() -> list[str]:
    """Every pass name fxq can run (built-in, registered and from entry points), sorted."""
    load_group("fxq.passes", register_pass)
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
