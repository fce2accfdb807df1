"""QConfigMapping: rules that say which QConfig each op gets, with torch.ao's precedence, and which rule won.

Precedence, lowest to highest:
    global < object_type < module_name_regex < module_name < module_name_object_type_order
For a module call the object type is the module's class. For a function or method call inside a module, the
function's own object_type rule is overridden by the enclosing module's type, regex and name rules, and then by
an order rule keyed by (enclosing module path, function, call index). A module_name rule also covers every
submodule beneath that name, unless a longer name has its own rule. ``None`` as a qconfig means "stay float".
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fxq.errors import ConfigError, FxqWarning
from fxq.observers import SIGMOID_QPARAMS, TANH_QPARAMS, MovingAverageMinMaxObserver
from fxq.qconfig import QConfig, check_backend, get_default_qconfig

_UNSET = object()


@dataclass(frozen=True)
class Resolution:
    """The qconfig chosen for one op and the rule that chose it (e.g. ``module_name('head')``)."""

    qconfig: QConfig | None
    rule: str


def _check_qconfig(qconfig: Any) -> None:
    if qconfig is not None and not isinstance(qconfig, QConfig):
        raise ConfigError(f"expected a fxq.QConfig or None (stay float), got {type(qconfig).__name__}")


def _check_object_type(object_type: Any) -> None:
    if not (isinstance(object_type, (type, str)) or callable(object_type)):
        raise ConfigError(f"object_type must be a module class, a function or a method name; got {object_type!r}")


def _object_name(object_type: Any) -> str:
    if isinstance(object_type, str):
        return object_type
    module = getattr(object_type, "__module__", "") or ""
    name = getattr(object_type, "__qualname__", getattr(object_type, "__name__", repr(object_type)))
    if isinstance(object_type, type):
        return name
    return f"{module}.{name}" if module and module != "builtins" else name


class QConfigMapping:
    """Ordered rules from ops to QConfigs; setters return ``self`` so they chain."""

    def __init__(self) -> None:
        self.global_qconfig: Any = _UNSET
        self.object_type_qconfigs: dict[Any, QConfig | None] = {}
        self.module_name_regex_qconfigs: dict[str, QConfig | None] = {}
        self.module_name_qconfigs: dict[str, QConfig | None] = {}
        self.module_name_object_type_order_qconfigs: dict[tuple[str, Any, int], QConfig | None] = {}

    def set_global(self, qconfig: QConfig | None) -> QConfigMapping:
        _check_qconfig(qconfig)
        self.global_qconfig = qconfig
        return self

    def set_object_type(self, object_type: type | Callable | str, qconfig: QConfig | None) -> QConfigMapping:
        _check_object_type(object_type)
        _check_qconfig(qconfig)
        self.object_type_qconfigs[object_type] = qconfig
        return self

    def set_module_name_regex(self, regex: str, qconfig: QConfig | None) -> QConfigMapping:
        try:
            re.compile(regex)
        except re.error as err:
            raise ConfigError(f"module_name_regex {regex!r} is not a valid regular expression: {err}") from err
        _check_qconfig(qconfig)
        self.module_name_regex_qconfigs[regex] = qconfig
        return self

    def set_module_name(self, module_name: str, qconfig: QConfig | None) -> QConfigMapping:
        if not isinstance(module_name, str):
            raise ConfigError(f"module_name must be a dotted module path string; got {module_name!r}")
        _check_qconfig(qconfig)
        self.module_name_qconfigs[module_name] = qconfig
        return self

    def set_module_name_object_type_order(self, module_name: str, object_type: type | Callable | str, index: int,
                                          qconfig: QConfig | None) -> QConfigMapping:
        if not isinstance(module_name, str) or not isinstance(index, int) or index < 0:
            raise ConfigError("set_module_name_object_type_order(module_name: str, object_type, index: int >= 0, "
                              f"qconfig); got module_name={module_name!r}, index={index!r}")
        _check_object_type(object_type)
        _check_qconfig(qconfig)
        self.module_name_object_type_order_qconfigs[(module_name, object_type, index)] = qconfig
        return self

    def resolve(self, *, module_path: str, module_type: type | None, function: Any = None,
                order_key: tuple[str, Any, int] | None = None) -> Resolution:
        """The qconfig for one op and the rule that chose it.

        Args:
            module_path: the called module's path (module calls) or the enclosing module's ("" for the root).
            module_type: that module's type.
            function: the function or method name, for function/method calls; None for module calls.
            order_key: (parent path, object type, index among calls of that type in that parent).
        """
        if self.global_qconfig is _UNSET:
            current = Resolution(None, "default(float)")
        else:
            current = Resolution(self.global_qconfig, "global")
        if function is not None and _has(self.object_type_qconfigs, function):
            current = Resolution(self.object_type_qconfigs[function], f"object_type({_object_name(function)})")
        if module_type is not None and _has(self.object_type_qconfigs, module_type):
            current = Resolution(self.object_type_qconfigs[module_type], f"object_type({_object_name(module_type)})")
        for regex, qconfig in self.module_name_regex_qconfigs.items():
            if module_path and re.match(regex, module_path):
                current = Resolution(qconfig, f"module_name_regex({regex!r})")
                break
        name = _closest_named(self.module_name_qconfigs, module_path)
        if name is not None:
            current = Resolution(self.module_name_qconfigs[name], f"module_name({name!r})")
        if order_key is not None and order_key in self.module_name_object_type_order_qconfigs:
            path, object_type, index = order_key
            current = Resolution(self.module_name_object_type_order_qconfigs[order_key],
                                 f"module_name_object_type_order({path!r}, {_object_name(object_type)}, {index})")
        return current

    def validate(self, module_names: set[str]) -> None:
        """ConfigError for a module_name or order rule naming a module not in ``module_names``; a warning for a
        regex that matches none of them."""
        names = set(module_names) | {""}
        named = list(self.module_name_qconfigs) + [path for path, _, _ in self.module_name_object_type_order_qconfigs]
        for path in named:
            if path not in names:
                close = difflib.get_close_matches(path, sorted(n for n in names if n), n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ConfigError(f"QConfigMapping names module {path!r}, which the model does not have{hint}")
        for regex in self.module_name_regex_qconfigs:
            if not any(re.match(regex, name) for name in names if name):
                warnings.warn(f"QConfigMapping regex {regex!r} matches no module of the model", FxqWarning,
                              stacklevel=3)

    def to_dict(self) -> dict[str, Any]:
        """torch.ao's dict form: {"": global, "object_type": [(t, qc)], "module_name_regex": [...], ...}."""
        result: dict[str, Any] = {}
        if self.global_qconfig is not _UNSET:
            result[""] = self.global_qconfig
        result["object_type"] = list(self.object_type_qconfigs.items())
        result["module_name_regex"] = list(self.module_name_regex_qconfigs.items())
        result["module_name"] = list(self.module_name_qconfigs.items())
        result["module_name_object_type_order"] = [
            (*key, qconfig) for key, qconfig in self.module_name_object_type_order_qconfigs.items()]
        return result

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> QConfigMapping:
        """Build a mapping from ``to_dict``'s (and torch.ao's) dict form."""
        mapping = cls()
        if "" in spec:
            mapping.set_global(spec[""])
        for object_type, qconfig in spec.get("object_type", []):
            mapping.set_object_type(object_type, qconfig)
        for regex, qconfig in spec.get("module_name_regex", []):
            mapping.set_module_name_regex(regex, qconfig)
        for name, qconfig in spec.get("module_name", []):
            mapping.set_module_name(name, qconfig)
        for name, object_type, index, qconfig in spec.get("module_name_object_type_order", []):
            mapping.set_module_name_object_type_order(name, object_type, index, qconfig)
        return mapping

    def __repr__(self) -> str:
        parts = [f"{key}={value!r}" for key, value in self.to_dict().items() if value]
        return f"QConfigMapping({', '.join(parts)})"


def _has(table: dict, key: Any) -> bool:
    try:
        return key in table
    except TypeError:
        return False


def _closest_named(table: dict[str, Any], path: str) -> str | None:
    """The longest rule name that is ``path`` or one of its ancestors ("" never matches)."""
    while path:
        if path in table:
            return path
        path = path.rpartition(".")[0]
    return None


def _fixed_range_rules(mapping: QConfigMapping) -> None:
    """sigmoid/hardsigmoid/softmax outputs lie in [0, 1] and tanh's in [-1, 1]: fixed qparams, every form."""
    from torch import nn
    from torch.nn import functional as F

    unit = QConfig(activation=SIGMOID_QPARAMS, weight=None)
    signed = QConfig(activation=TANH_QPARAMS, weight=None)
    for op in (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid", nn.Hardsigmoid, F.hardsigmoid, nn.Softmax,
               F.softmax, torch.softmax, "softmax"):
        mapping.set_object_type(op, unit)
    for op in (nn.Tanh, torch.tanh, F.tanh, "tanh"):
        mapping.set_object_type(op, signed)


def get_default_qconfig_mapping(backend: str = "x86") -> QConfigMapping:
    """The default static-quantization mapping for ``backend`` ("x86"/"fbgemm", "qnnpack", "reference").

    Global: ``get_default_qconfig(backend)``. Fixed qparams for sigmoid, hardsigmoid, softmax and tanh. Embeddings
    stay float (static activation quantization does not apply to an index lookup).
    """
    from torch import nn

    check_backend(backend)
    mapping = QConfigMapping().set_global(get_default_qconfig(backend))
    _fixed_range_rules(mapping)
    mapping.set_object_type(nn.Embedding, None).set_object_type(nn.EmbeddingBag, None)
    return mapping


def get_default_qat_qconfig_mapping(backend: str = "x86") -> QConfigMapping:
    """The default mapping for quantization-aware training: as the static one, but moving-average min/max
    activations, which follow ranges that change while the weights train."""
    check_backend(backend)
    mapping = get_default_qconfig_mapping(backend)
    reduce = backend in ("x86", "fbgemm")
    mapping.set_global(QConfig(activation=MovingAverageMinMaxObserver.with_args(reduce_range=reduce),
                               weight=mapping.global_qconfig.weight))
    return mapping
