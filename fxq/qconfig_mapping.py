"""QConfigMapping: rules that say which QConfig each op gets, with torch.ao's precedence, and which rule won.

Resolution is pure data (paths, types, functions, call indices), so it is tested without graphs; the
assign-qconfig pass computes those from the graph and records the ``Resolution`` on each node.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fxq.errors import ConfigError, FxqWarning
from fxq.qconfig import (
    QConfig,
    check_backend,
    get_default_dynamic_qconfig,
    get_default_embedding_qconfig,
    get_default_qconfig,
)

_UNSET = object()
_DICT_KEYS = ("", "object_type", "module_name_regex", "module_name", "module_name_object_type_order")


@dataclass(frozen=True)
class Resolution:
    """The qconfig chosen for one op (None: stay float) and the rule that chose it, e.g. "global"."""

    qconfig: QConfig | None
    rule: str


class QConfigMapping:
    """Ordered rules from ops to QConfigs; setters return ``self`` so they chain. ``None`` means "stay float".

    Precedence, lowest to highest (as torch.ao's FX prepare)::

        global < object_type < module_name_regex < module_name < module_name_object_type_order

    - A module call starts from the object_type rule for the module's class, then the first regex (in the
      order the regexes were set) that ``re.match``-es its path, then the module_name rule for its path or its
      closest dotted ancestor ("features" covers "features.0.conv" unless "features.0" has a rule of its own),
      then the order rule keyed by (parent path, class, index among calls of that class in that parent).
    - A function or method call starts from the object_type rule for the function (a method by its name, e.g.
      "sigmoid"); the innermost enclosing module's object_type, regex and module_name rules override it, and
      then the order rule keyed by (enclosing module path, function, index).
    - Regexes are also tried on the root path "", as torch.ao does, so ".*" covers top-level function calls;
      module_name rules never match the root (use ``set_global``).
    - With no rule and no global qconfig, an op stays float (rule "default(float)").

    Names are checked against the model by ``validate`` (the assign-qconfig pass calls it), because a rule
    naming a module that does not exist would otherwise do nothing, silently.
    """

    def __init__(self) -> None:
        self._global: Any = _UNSET
        self.object_type_qconfigs: dict[type | Callable | str, QConfig | None] = {}
        self.module_name_regex_qconfigs: dict[str, QConfig | None] = {}
        self.module_name_qconfigs: dict[str, QConfig | None] = {}
        self.module_name_object_type_order_qconfigs: dict[tuple[str, type | Callable | str, int],
                                                          QConfig | None] = {}

    @property
    def global_qconfig(self) -> QConfig | None:
        """The global qconfig; None when set to None and when never set (``resolve`` tells them apart)."""
        return None if self._global is _UNSET else self._global

    def set_global(self, qconfig: QConfig | None) -> QConfigMapping:
        """Every op not matched by a more specific rule."""
        _check_qconfig(qconfig, "set_global")
        self._global = qconfig
        return self

    def set_object_type(self, object_type: type | Callable | str, qconfig: QConfig | None) -> QConfigMapping:
        """Every call of a module class (``nn.Linear``), a function (``F.relu``) or a method name ("relu")."""
        _check_object_type(object_type, "set_object_type")
        _check_qconfig(qconfig, "set_object_type")
        self.object_type_qconfigs[object_type] = qconfig
        return self

    def set_module_name_regex(self, regex: str, qconfig: QConfig | None) -> QConfigMapping:
        """Modules whose path ``re.match``-es ``regex`` (matched at the start, not the whole path); the first
        regex set that matches wins."""
        if not isinstance(regex, str):
            raise ConfigError(f"set_module_name_regex needs a regular expression string; got {regex!r}")
        try:
            re.compile(regex)
        except re.error as err:
            message = f"module_name_regex {regex!r} is not a valid regular expression: {err}"
            raise ConfigError(message) from err
        _check_qconfig(qconfig, "set_module_name_regex")
        self.module_name_regex_qconfigs[regex] = qconfig
        return self

    def set_module_name(self, module_name: str, qconfig: QConfig | None) -> QConfigMapping:
        """The module at dotted path ``module_name`` and everything beneath it."""
        _check_module_path(module_name, "set_module_name")
        if module_name == "":
            raise ConfigError("set_module_name('') names the root model, which torch.ao's precedence never "
                              "matches by name; use set_global(...) for the whole model")
        _check_qconfig(qconfig, "set_module_name")
        self.module_name_qconfigs[module_name] = qconfig
        return self

    def set_module_name_object_type_order(self, module_name: str, object_type: type | Callable | str,
                                          index: int, qconfig: QConfig | None) -> QConfigMapping:
        """The ``index``-th call (from 0) of ``object_type`` directly inside the module at ``module_name``."""
        where = "set_module_name_object_type_order"
        _check_module_path(module_name, where)
        _check_object_type(object_type, where)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ConfigError(f"{where} needs a call index that is an int >= 0; got {index!r}")
        _check_qconfig(qconfig, where)
        self.module_name_object_type_order_qconfigs[(module_name, object_type, index)] = qconfig
        return self

    def resolve(self, *, module_path: str, module_type: type | None, function: Any = None,
                order_key: tuple[str, Any, int] | None = None) -> Resolution:
        """The qconfig for one op and the rule that chose it (see the class docstring for the precedence).

        Args:
            module_path: the called module's path (module calls) or the innermost enclosing module's path
                (function and method calls; "" for the root).
            module_type: that module's class (None if unknown).
            function: the function, or the method name, of a function or method call; None for module calls.
            order_key: (parent path, object type, index among calls of that type in that parent); the caller
                counts the calls. None: order rules do not apply.
        """
        if self._global is _UNSET:
            current = Resolution(None, "default(float)")
        else:
            current = Resolution(self._global, "global")
        for kind in (function, module_type):
            if kind is not None and _has(self.object_type_qconfigs, kind):
                current = Resolution(self.object_type_qconfigs[kind], f"object_type({_object_name(kind)})")
        regex = next((rx for rx in self.module_name_regex_qconfigs if re.match(rx, module_path)), None)
        if regex is not None:
            current = Resolution(self.module_name_regex_qconfigs[regex], f"module_name_regex({regex!r})")
        name = _closest_named(self.module_name_qconfigs, module_path)
        if name is not None:
            current = Resolution(self.module_name_qconfigs[name], f"module_name({name!r})")
        if order_key is not None and _has(self.module_name_object_type_order_qconfigs, order_key):
            path, kind, index = order_key
            current = Resolution(self.module_name_object_type_order_qconfigs[order_key],
                                 f"module_name_object_type_order({path!r}, {_object_name(kind)}, {index})")
        return current

    def validate(self, module_names: set[str]) -> None:
        """Check the rules against the model's module paths (``{name for name, _ in model.named_modules()}``).

        Raises:
            ConfigError: module_name or order rules name paths the model does not have; the message names each
                and suggests close matches.

        Warns:
            FxqWarning: a regex matches no module path (the rule does nothing).
        """
        names = set(module_names) | {""}
        named = {*self.module_name_qconfigs, *(key[0] for key in self.module_name_object_type_order_qconfigs)}
        missing = sorted(named - names)
        if missing:
            raise ConfigError("QConfigMapping names modules the model does not have: "
                              + "; ".join(with_suggestion(path, names) for path in missing))
        for regex in self.module_name_regex_qconfigs:
            if not any(re.match(regex, name) for name in names):
                warnings.warn(f"QConfigMapping regex {regex!r} matches no module of the model, so it does "
                              "nothing", FxqWarning, stacklevel=2)

    def to_dict(self) -> dict[str, Any]:
        """torch.ao's dict form: the global qconfig under "", and lists of rule tuples under "object_type"
        ``(type, qc)``, "module_name_regex" ``(regex, qc)``, "module_name" ``(name, qc)`` and
        "module_name_object_type_order" ``(name, type, index, qc)``, in the order they were set.

        "" is absent when no global qconfig was set, so ``from_dict`` restores "unset" rather than "float".
        """
        result: dict[str, Any] = {} if self._global is _UNSET else {"": self._global}
        result["object_type"] = list(self.object_type_qconfigs.items())
        result["module_name_regex"] = list(self.module_name_regex_qconfigs.items())
        result["module_name"] = list(self.module_name_qconfigs.items())
        result["module_name_object_type_order"] = [
            (*key, qconfig) for key, qconfig in self.module_name_object_type_order_qconfigs.items()]
        return result

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> QConfigMapping:
        """Build a mapping from ``to_dict``'s (and torch.ao's) dict form, through the checking setters.

        Raises:
            ConfigError: an unknown key, an entry of the wrong shape, or anything a setter rejects.
        """
        unknown = sorted(map(repr, set(spec) - set(_DICT_KEYS)))
        if unknown:
            raise ConfigError(f"unknown QConfigMapping dict keys {', '.join(unknown)}; known: "
                              f"{', '.join(map(repr, _DICT_KEYS))}")
        mapping = cls()
        if "" in spec:
            mapping.set_global(spec[""])
        setters = {"object_type": (mapping.set_object_type, 2),
                   "module_name_regex": (mapping.set_module_name_regex, 2),
                   "module_name": (mapping.set_module_name, 2),
                   "module_name_object_type_order": (mapping.set_module_name_object_type_order, 4)}
        for key, (setter, size) in setters.items():
            for entry in spec.get(key, []):
                if not isinstance(entry, (tuple, list)) or len(entry) != size:
                    raise ConfigError(f"each {key!r} entry must be a tuple of {size} items; got {entry!r}")
                setter(*entry)
        return mapping

    def to_json(self) -> str:
        """The mapping as JSON text that ``from_json`` loads without running any code (``fxq.mapping_json``).

        Raises:
            ConfigError: a rule holds something JSON cannot name (a lambda factory, an arbitrary object).
        """
        from fxq.mapping_json import mapping_to_json

        return mapping_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> QConfigMapping:
        """The mapping ``to_json`` wrote; names resolve only among modules already imported.

        Raises:
            LoadError: a damaged or tampered text, another format version, or a name whose module is not imported.
        """
        from fxq.mapping_json import mapping_from_json

        return mapping_from_json(text)

    def __repr__(self) -> str:
        rules = [] if self._global is _UNSET else [f"global={self._global!r}"]
        tables = {"object_type": {_object_name(key): qc for key, qc in self.object_type_qconfigs.items()},
                  "module_name_regex": {repr(key): qc for key, qc in self.module_name_regex_qconfigs.items()},
                  "module_name": {repr(key): qc for key, qc in self.module_name_qconfigs.items()},
                  "module_name_object_type_order": {
                      f"({path!r}, {_object_name(kind)}, {index})": qc
                      for (path, kind, index), qc in self.module_name_object_type_order_qconfigs.items()}}
        for label, table in tables.items():
            if table:
                rules.append(f"{label}={{{', '.join(f'{key}: {qc!r}' for key, qc in table.items())}}}")
        return f"QConfigMapping({', '.join(rules)})"


def _check_qconfig(qconfig: Any, where: str) -> None:
    if qconfig is not None and not isinstance(qconfig, QConfig):
        kind = f"{type(qconfig).__module__}.{type(qconfig).__qualname__}"
        raise ConfigError(f"{where} needs a fxq.QConfig, or None to stay float; got a {kind}")


def _check_object_type(object_type: Any, where: str) -> None:
    if isinstance(object_type, nn.Module):
        raise ConfigError(f"{where} got a {type(object_type).__name__} instance; pass its class "
                          f"({type(object_type).__name__}) to match every such module, or use "
                          "set_module_name(path, ...) to match this one")
    if not (isinstance(object_type, (type, str)) or callable(object_type)):
        raise ConfigError(f"{where} needs a module class, a function or a method name as object_type; "
                          f"got {object_type!r}")


def _check_module_path(module_name: Any, where: str) -> None:
    if not isinstance(module_name, str):
        raise ConfigError(f"{where} needs a dotted module path string such as 'features.0'; "
                          f"got {module_name!r}")


def _object_name(object_type: Any) -> str:
    """A short, address-free name: ``Linear``, ``torch.nn.functional.relu``, ``operator.add``, ``'relu'``."""
    if isinstance(object_type, str):
        return repr(object_type)
    if isinstance(object_type, type):
        return object_type.__name__
    name = getattr(object_type, "__name__", None)
    if name is None:
        return type(object_type).__qualname__
    module = getattr(object_type, "__module__", None)
    if module is None:
        return getattr(object_type, "__qualname__", name)
    module = "operator" if module == "_operator" else module
    return name if module == "builtins" else f"{module}.{name}"


def _has(table: dict, key: Any) -> bool:
    """``key in table``, False for unhashable keys (a callable object with ``__eq__`` but no hash)."""
    try:
        return key in table
    except TypeError:
        return False


def _closest_named(table: dict[str, Any], path: str) -> str | None:
    """The longest rule name that is ``path`` or one of its dotted ancestors ("" never matches, as in
    torch.ao)."""
    while path:
        if path in table:
            return path
        path = path.rpartition(".")[0]
    return None


def with_suggestion(path: str, names: set[str]) -> str:
    """``path`` quoted, with the closest names a user may have meant."""
    close = difflib.get_close_matches(path, sorted(name for name in names if name), n=3)
    return f"{path!r} (did you mean {' or '.join(map(repr, close))}?)" if close else repr(path)


def get_default_qconfig_mapping(backend: str = "x86") -> QConfigMapping:
    """The default static-quantization mapping for ``backend`` ("x86" or "fbgemm", "qnnpack", "reference").

    Global: ``get_default_qconfig(backend)``; bounded ops (sigmoid, softmax...) are observed like any op.
    ``nn.LSTM`` and ``nn.GRU`` are quantized dynamically (``get_default_dynamic_qconfig``: int8 weights, the
    recurrent kernel quantizes activations step by step): no kernel runs them on static qparams, and left float
    they kept a conv + LSTM + GRU model (``tests/dynamic/test_dynamic_graph.py``) at 0.99x of its float size
    (dynamic: 0.39x, 47.0 dB SQNR against float on x86).
    ``nn.Embedding`` and ``nn.EmbeddingBag`` tables are stored in 8-bit rows (``get_default_embedding_qconfig``,
    weight-only: a lookup has no float input to observe, and its output stays float); left float, the tables
    kept Hugging Face's BERT-base at 0.42x of its float size.

    Raises:
        ConfigError: an unknown backend.
    """
    dynamic = get_default_dynamic_qconfig(backend=backend)
    mapping = QConfigMapping().set_global(get_default_qconfig(backend))
    mapping.set_object_type(nn.LSTM, dynamic).set_object_type(nn.GRU, dynamic)
    embedding = get_default_embedding_qconfig()
    return mapping.set_object_type(nn.Embedding, embedding).set_object_type(nn.EmbeddingBag, embedding)


def get_default_qat_qconfig_mapping(backend: str = "x86") -> QConfigMapping:
    """The default mapping for quantization-aware training: the static one, but with moving-average min/max
    activation observers (quint8, full range as the static default), which follow ranges that move while the
    weights train. Weights keep the static per-channel observer (7-bit on x86, which is what lets activations
    keep all 8 bits).

    Raises:
        ConfigError: an unknown backend.
    """
    from fxq.observers import MovingAverageMinMaxObserver

    mapping = get_default_qconfig_mapping(check_backend(backend))
    activation = MovingAverageMinMaxObserver.with_args(dtype=torch.quint8)
    return mapping.set_global(QConfig(activation=activation, weight=mapping.global_qconfig.weight))
