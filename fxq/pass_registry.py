"""Pass names to pass classes: built-ins load lazily, third-party passes come from the ``fxq.passes`` entry
point group or ``register_pass``. Two passes claiming one name is an error, never a silent override."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from fxq.errors import ConfigError
from fxq.graph_pass import GraphPass

_BUILTIN_MODULES = {
    "normalize": "fxq.passes.normalize",
    "fuse": "fxq.passes.fuse",
    "equalize": "fxq.passes.equalize",
    "assign-qconfig": "fxq.passes.assign_qconfig",
    "assign-precision": "fxq.passes.assign_precision",
    "insert-observers": "fxq.passes.insert_observers",
    "record-input-statistics": "fxq.passes.record_input_statistics",
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
_ENTRY_POINTS_LOADED = False


def register_pass(cls: type[GraphPass]) -> type[GraphPass]:
    """Class decorator: make ``cls`` available by ``cls.name``. Raises ConfigError on a name clash."""
    if not (isinstance(cls, type) and issubclass(cls, GraphPass)) or not cls.name:
        raise ConfigError(f"{cls!r} is not a GraphPass subclass with a non-empty `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"pass name {cls.name!r} is already taken by {existing.__module__}."
                          f"{existing.__qualname__}; choose another name for {cls.__module__}.{cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for point in entry_points(group="fxq.passes"):
        register_pass(point.load())


def get_pass(name: str) -> type[GraphPass]:
    """The pass class registered as ``name``; ConfigError listing the known names if there is none."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise ConfigError(f"no pass named {name!r}; known passes: {', '.join(available_passes())}")
    return _REGISTRY[name]


def available_passes() -> list[str]:
    """Every pass name fxq can run (built-in, registered and from entry points), sorted."""
    _load_entry_points()
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
