"""A QConfigMapping as JSON, loaded without importing or running anything a file names.

A pickled mapping would name functions for the loader to call, so a tampered one runs whatever it names. The
JSON form holds ``to_dict``'s rules with every class and function written by name (``module:qualname``, as
``fxq.plain_data`` writes them) and resolved by ``plain_data`` on load, among modules already imported::

    {"format": 1, "global": QC, "object_type": [[TYPE, QC], ...], "module_name_regex": [[REGEX, QC], ...],
     "module_name": [[NAME, QC], ...], "module_name_object_type_order": [[NAME, TYPE, INDEX, QC], ...]}

QC is null (stay float) or {"activation": FACTORY, "weight": FACTORY or null}; FACTORY is {"observer":
"fxq.observers.minmax:MinMaxObserver", "args": {...}}, whose args are JSON scalars and lists, with dtypes and
qschemes as "torch.quint8" / "torch.per_channel_symmetric". TYPE is an nn.Module class or a function a graph
may call, by name, or a method name ("relu", which has no ":"). "global" is absent when no global was set.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import torch
from torch import nn

from fxq.errors import ConfigError, LoadError
from fxq.observers.base import Observer, ObserverFactory
from fxq.plain_data import EncodeError, UnresolvedName, is_fxq, name_of, reference_named
from fxq.qconfig import QConfig
from fxq.qconfig_mapping import QConfigMapping, _object_name

FORMAT = 1
_RULES = ("object_type", "module_name_regex", "module_name", "module_name_object_type_order")
_TYPE_AT = {"object_type": 0, "module_name_object_type_order": 1}  # where each rule's entries hold an object type
_SIZES = {"object_type": 2, "module_name_regex": 2, "module_name": 2, "module_name_object_type_order": 4}
_TORCH_CONSTANTS = {str(v): v for v in vars(torch).values() if isinstance(v, (torch.dtype, torch.qscheme))}
_SUPPORTED = ("fxq observer factories (SomeObserver.with_args(...)) whose arguments are None, bools, ints, finite "
              "floats, strings, lists, torch dtypes and qschemes; object types that are nn.Module classes, "
              "functions a graph may call (torch's and torch.nn.functional's, operator arithmetic, math) or "
              "method names")


def mapping_to_json(mapping: QConfigMapping) -> str:
    """``mapping`` as JSON text (see the module docstring).

    Raises:
        ConfigError: a rule holds something JSON cannot name (a lambda or partial factory, a user observer
            class, an observer argument that is an arbitrary object, a local function as object type); the
            message names the rule and the value.
    """
    spec = mapping.to_dict()
    data: dict[str, Any] = {"format": FORMAT}
    if "" in spec:
        data["global"] = _write_qconfig(spec[""], "global")
    for key in _RULES:
        data[key] = [_write_entry(key, entry) for entry in spec[key]]
    return json.dumps(data, indent=1, allow_nan=False)


def mapping_from_json(text: str) -> QConfigMapping:
    """The mapping ``mapping_to_json`` wrote. Names resolve only among modules already imported (and torch's and
    fxq's); observers must be fxq's own classes, so nothing but fxq's code runs.

    Raises:
        LoadError: not this format (or another version), a malformed entry, a name that is not allowed or whose
            module is not imported (the message says which to import), or a rule the mapping rejects.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise LoadError(f"a QConfigMapping JSON text must be valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise LoadError(f"not a QConfigMapping JSON text of format {FORMAT} (found format {found!r}); it is "
                        "damaged or from a newer fxq")
    unknown = sorted(set(data) - {"format", "global", *_RULES})
    if unknown:
        raise LoadError(f"unknown keys {unknown} in the QConfigMapping JSON; known: global, {', '.join(_RULES)}")
    try:
        spec: dict[str, Any] = {key: [_read_entry(key, entry) for entry in _list(data.get(key, []), key)]
                                for key in _RULES}
        if "global" in data:
            spec[""] = _read_qconfig(data["global"], "global")
        return QConfigMapping.from_dict(spec)
    except LoadError:
        raise
    except (ConfigError, TypeError, ValueError) as err:
        raise LoadError(f"the QConfigMapping JSON holds an invalid rule: {err}") from err


def _write_entry(key: str, entry: tuple) -> list:
    *parts, qconfig = entry
    where = f"{key}({', '.join(_object_name(p) if callable(p) else repr(p) for p in parts)})"
    at = _TYPE_AT.get(key)
    if at is not None:
        parts[at] = _write_type(parts[at], where)
    return [*parts, _write_qconfig(qconfig, where)]


def _write_type(object_type: Any, where: str) -> str:
    """A method name as is; a class or function by name, if loading finds this very object again."""
    if isinstance(object_type, str):
        if ":" in object_type:
            raise ConfigError(f"cannot save rule {where} as JSON: a method name cannot contain ':'")
        return object_type
    try:
        name = name_of(object_type)
        if _read_type(name, where) is object_type:
            return name
    except (EncodeError, LoadError):
        pass
    raise ConfigError(f"cannot save rule {where} as JSON: {_object_name(object_type)} cannot be loaded back by "
                      f"name; "
                      f"supported: {_SUPPORTED}")


def _read_type(name: Any, where: str) -> Any:
    if not isinstance(name, str):
        raise LoadError(f"rule {where} of the QConfigMapping JSON names its object type by {name!r}, not a string")
    if ":" not in name:
        return name
    found = reference_named(name)
    if not isinstance(found, UnresolvedName) and not (isinstance(found, type) and not issubclass(found, nn.Module)):
        return found
    module = name.partition(":")[0]
    if module not in sys.modules:
        raise LoadError(f"rule {where} of the QConfigMapping JSON names {name}: import {module} before loading it "
                        "(loading a mapping imports nothing but torch and fxq)")
    raise LoadError(f"rule {where} of the QConfigMapping JSON names {name} as an object type, which is not an "
                    "nn.Module class or a function a graph may call; the file is damaged or was tampered with")


def _write_qconfig(qconfig: QConfig | None, where: str) -> dict | None:
    if qconfig is None:
        return None
    weight = None if qconfig.weight is None else _write_factory(qconfig.weight, f"{where} weight")
    return {"activation": _write_factory(qconfig.activation, f"{where} activation"), "weight": weight}


def _read_qconfig(data: Any, where: str) -> QConfig | None:
    if data is None:
        return None
    if not (isinstance(data, dict) and set(data) == {"activation", "weight"}):
        raise LoadError(f"rule {where} of the QConfigMapping JSON: a qconfig must be null or "
                        f"{{\"activation\": ..., \"weight\": ...}}; got {data!r}")
    weight = None if data["weight"] is None else _read_factory(data["weight"], where)
    return QConfig(activation=_read_factory(data["activation"], where), weight=weight)


def _write_factory(factory: Any, where: str) -> dict:
    if not (isinstance(factory, ObserverFactory) and issubclass(factory.cls, Observer) and is_fxq(factory.cls)):
        raise ConfigError(f"cannot save rule {where} as JSON: {factory!r} is not one of fxq's observer factories; "
                          f"supported: {_SUPPORTED}")
    args = {key: _write_value(value, f"{where} {factory!r} argument {key}") for key, value in factory.kwargs.items()}
    return {"observer": name_of(factory.cls), "args": args}


def _read_factory(data: Any, where: str) -> ObserverFactory:
    if not (isinstance(data, dict) and set(data) == {"observer", "args"} and isinstance(data["args"], dict)):
        raise LoadError(f"rule {where} of the QConfigMapping JSON: an observer factory must be "
                        f"{{\"observer\": ..., \"args\": {{...}}}}; got {data!r}")
    name = data["observer"]
    cls = reference_named(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, Observer) and is_fxq(cls)):
        raise LoadError(f"rule {where} of the QConfigMapping JSON names {name!r} as an observer, which is not one "
                        "of fxq's observer classes; the file is damaged or was tampered with")
    return cls.with_args(**{key: _read_value(value, where) for key, value in data["args"].items()})


def _write_value(value: Any, where: str) -> Any:
    if isinstance(value, (torch.dtype, torch.qscheme)):
        return str(value)
    if isinstance(value, list):
        return [_write_value(item, where) for item in value]
    if value is None or isinstance(value, (bool, int)) or isinstance(value, float) and math.isfinite(value) or \
            isinstance(value, str) and value not in _TORCH_CONSTANTS:
        return value
    raise ConfigError(f"cannot save rule {where} as JSON: {value!r} (a {type(value).__qualname__}); supported: "
                      f"{_SUPPORTED}")


def _read_value(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_read_value(item, where) for item in value]
    if isinstance(value, dict):
        raise LoadError(f"rule {where} of the QConfigMapping JSON holds an observer argument {value!r}; arguments "
                        "are JSON scalars, lists and torch dtype/qscheme names")
    return _TORCH_CONSTANTS.get(value, value) if isinstance(value, str) else value


def _read_entry(key: str, entry: Any) -> tuple:
    if not (isinstance(entry, list) and len(entry) == _SIZES[key]):
        raise LoadError(f"each {key!r} entry of the QConfigMapping JSON must be a list of {_SIZES[key]} items; "
                        f"got {entry!r}")
    *parts, qconfig = entry
    where = f"{key}({', '.join(map(repr, parts))})"
    at = _TYPE_AT.get(key)
    if at is not None:
        parts[at] = _read_type(parts[at], where)
    return (*parts, _read_qconfig(qconfig, where))


def _list(value: Any, key: str) -> list:
    if not isinstance(value, list):
        raise LoadError(f"{key!r} in the QConfigMapping JSON must be a list of rules; got {value!r}")
    return value
