"""Python values as plain data that ``torch.load(weights_only=True)`` reads back without running any code.

A pickle names functions to call while it is read, so a tampered pickle runs whatever it names; ``fxq.save``
therefore writes models as data. ``encode`` turns a value into None, bools, numbers, strings, tensors, torch
dtypes/devices/qschemes/layouts/sizes, tuples and lists of those, plus dicts tagged with the key ``TAG`` for
the rest (a dict itself is tagged, so a plain dict never passes for a tag):

- ``ref``: a class or function, by name (``module:qualname``, or ``op:namespace::name.overload`` for an operator);
- ``object`` / ``enum``: an instance of one of fxq's own classes (node records, qconfigs, reports), rebuilt
  from its attributes without calling its constructor;
- ``treespec``: how a model captured with torch.export flattens its inputs and outputs, as torch's JSON (the
  types it names are looked up among those registered with pytree: nothing is imported or run);
- ``dict``, ``set``, ``namedtuple``, ``slice``, ``ellipsis``, ``memory_format``; and ``node`` for a graph value (``fxq.graph_data``).

Reading resolves names only among modules already imported and torch's and fxq's own (it never imports
anything else), and a name is accepted only for what it is used as: ``callable_named`` for a function a graph
calls (operators, ``math``, torch's tensor functions, fxq's kernels, a few builtins), ``module_class_named``
for a module to build, ``reference_named`` for a value a record only mentions (a user's module class shows by
name even when its package is not imported).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import types
from typing import Any

import torch
from torch.utils import _pytree

from fxq.errors import LoadError

TAG = "__fxq__"
_NATIVE = (type(None), bool, int, float, str, torch.Tensor, torch.dtype, torch.device, torch.qscheme, torch.layout,
           torch.Size)
# what is written by name: classes, Python and C functions, operators
_NAMED = (type, types.FunctionType, types.BuiltinFunctionType, torch._ops.OpOverload, torch._ops.OpOverloadPacket)
_IMPORTABLE_ROOTS = ("torch", "fxq")  # the only packages a name may import: the ones loading the file runs anyway
_CALLABLE_BUILTINS = frozenset({"getattr", "len", "int", "float", "bool", "min", "max", "abs", "round", "range",
                                "slice", "tuple", "list", "sum", "all", "any", "isinstance"})
_CALLABLE_OPERATORS = frozenset({  # arithmetic, comparisons and indexing: not call, attrgetter or methodcaller
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert", "and_",
    "or_", "xor", "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge", "getitem", "setitem", "not_", "truth",
    "contains", "is_", "is_not", "index", "iadd", "isub", "imul", "itruediv", "ifloordiv", "imatmul", "iand",
    "ior"})
_CALLABLE_TORCH_MODULES = ("torch", "torch.functional", "torch.nn.functional", "torch._C._nn", "torch._C._fft",
                           "torch._C._linalg", "torch._C._special", "torch._C._VariableFunctions", "torch.fft",
                           "torch.linalg", "torch.special")
_MEMORY_FORMATS = {str(f): f for f in (torch.contiguous_format, torch.channels_last, torch.channels_last_3d,
                                        torch.preserve_format)}


class UnresolvedName:
    """A class or function a record mentions whose module is not imported where the file is loaded: kept by
    name, for the dump to show (``__name__``) and for ``fxq.save`` to write back as it was."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = self.__qualname__ = name.rpartition(":")[2].rpartition(".")[2]

    def __repr__(self) -> str:
        return f"<unresolved {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnresolvedName) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class EncodeError(TypeError):
    """A value ``encode`` cannot write as data (``fxq.save`` turns it into a ConfigError naming where it was)."""


def encode(value: Any, node_name=None) -> Any:
    """``value`` as plain data (see the module docstring). ``node_name(value)`` returns a graph node's name, or
    None for values that are not nodes.

    Raises:
        EncodeError: a value that is none of the kinds above.
    """
    if node_name is not None and (name := node_name(value)) is not None:
        return {TAG: "node", "name": name}
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple: keep its class
        return {TAG: "namedtuple", "class": name_of(type(value)), "items": [encode(v, node_name) for v in value]}
    if isinstance(value, tuple):
        return tuple(encode(item, node_name) for item in value)
    if isinstance(value, list):  # and torch.fx's immutable_list
        return [encode(item, node_name) for item in value]
    if isinstance(value, (set, frozenset)):
        return {TAG: "set", "items": [encode(item, node_name) for item in value]}
    if isinstance(value, dict):
        return {TAG: "dict", "items": [(encode(k, node_name), encode(v, node_name)) for k, v in value.items()]}
    if isinstance(value, slice):
        return {TAG: "slice", "items": [encode(v, node_name) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {TAG: "ellipsis"}
    if isinstance(value, torch.memory_format):
        return {TAG: "memory_format", "name": str(value)}
    if isinstance(value, _pytree.TreeSpec):
        return {TAG: "treespec", "json": _pytree.treespec_dumps(value)}
    if isinstance(value, UnresolvedName):
        return {TAG: "ref", "name": value.name}
    if isinstance(value, enum.Enum) and is_fxq(type(value)):
        return {TAG: "enum", "class": name_of(type(value)), "value": encode(value.value)}
    if isinstance(value, _NAMED):
        return {TAG: "ref", "name": name_of(value)}
    if is_fxq(type(value)) and hasattr(value, "__dict__"):
        return {TAG: "object", "class": name_of(type(value)),
                "state": {k: encode(v, node_name) for k, v in vars(value).items()}}
    raise EncodeError(f"a {type(value).__module__}.{type(value).__qualname__} object, which is not data")


def decode(data: Any, node=None) -> Any:
    """The value ``encode`` described; ``node(name)`` returns a graph node by name.

    Raises:
        LoadError: a name that is not allowed or cannot be found, or a malformed tag.
    """
    if isinstance(data, list):
        return [decode(item, node) for item in data]
    if isinstance(data, tuple):
        return tuple(decode(item, node) for item in data)
    if not isinstance(data, dict):
        return data
    kind = data.get(TAG)
    if kind == "dict":
        return {decode(k, node): decode(v, node) for k, v in data["items"]}
    if kind == "node" and node is not None:
        return node(data["name"])
    if kind == "set":
        return {decode(item, node) for item in data["items"]}
    if kind == "slice":
        return slice(*(decode(v, node) for v in data["items"]))
    if kind == "ellipsis":
        return Ellipsis
    if kind == "memory_format" and data["name"] in _MEMORY_FORMATS:
        return _MEMORY_FORMATS[data["name"]]
    if kind == "ref":
        return reference_named(data["name"])
    if kind == "treespec":
        return _treespec(data["json"])
    if kind == "namedtuple":
        cls = reference_named(data["class"])
        items = [decode(item, node) for item in data["items"]]
        return cls(*items) if isinstance(cls, type) and issubclass(cls, tuple) else tuple(items)
    if kind == "enum":
        return _fxq_class(data["class"])(decode(data["value"]))
    if kind == "object":
        obj = object.__new__(_fxq_class(data["class"]))
        obj.__dict__.update({k: decode(v, node) for k, v in data["state"].items()})
        return obj
    raise LoadError(f"the file holds data fxq does not know ({kind!r}); it is damaged or from a newer fxq")


def name_of(value) -> str:
    """The name ``encode`` writes for a class, function or operator; it must resolve back to the same object.

    Raises:
        EncodeError: an object that cannot be found again by any name (a lambda, a local function).
    """
    if isinstance(value, torch._ops.OpOverload):
        return f"op:{value._schema.name}.{value._overloadname}"
    if isinstance(value, torch._ops.OpOverloadPacket):
        return f"op:{value._qualified_op_name}"
    names = [(getattr(value, "__module__", None), getattr(value, "__qualname__", None))]
    if callable(value) and not isinstance(value, type):  # C functions report odd modules; try torch's public ones
        names += [(module, getattr(value, "__name__", None)) for module in _CALLABLE_TORCH_MODULES]
    for module, qualname in names:
        if module and qualname and "<" not in qualname and _lookup(module, qualname) is value:
            return f"{module}:{qualname}"
    raise EncodeError(f"{value!r}, which cannot be found again by name (a lambda or a local function?)")


def reference_named(name: str) -> Any:
    """A class or function a value mentions (a record's module type, a qconfig's observer class, a function
    passed as an argument): the object itself when it is something a graph may call (``callable_named``), an
    ``nn.Module`` class or one of fxq's classes; otherwise an ``UnresolvedName`` that only shows the name. So
    no value read from a file is a live reference to anything else (``os.system`` as an observer class or a
    ``key=`` argument stays a name)."""
    found = _resolve(name)
    if found is not None and (_may_call(found, name) or isinstance(found, type) and (
            issubclass(found, torch.nn.Module) or is_fxq(found))):
        return found
    return UnresolvedName(name)


def callable_named(name: str) -> Any:
    """A function a graph node calls: allowed only for operators, arithmetic from ``operator`` and ``math``,
    torch's tensor functions (not ``torch.load`` and the like), fxq's kernels and functional forms, and a few
    builtins (``getattr``, ``len``...).

    Raises:
        LoadError: any other name, or one that cannot be found.
    """
    found = _resolve(name)
    if found is None or not _may_call(found, name):
        raise LoadError(f"the file's graph calls {name}, which fxq.load does not allow a graph to call (only "
                        "operators, torch's tensor functions and fxq's kernels); the file is damaged or was "
                        "tampered with")
    return found


def _may_call(found: Any, name: str) -> bool:
    module, _, qualname = name.partition(":")
    if module == "op":
        return isinstance(found, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))
    if module in ("operator", "_operator"):
        return qualname in _CALLABLE_OPERATORS
    if module == "math":
        return not isinstance(found, type)
    if module == "builtins":
        return qualname in _CALLABLE_BUILTINS
    defined_in = getattr(found, "__module__", None) or ""
    if module.startswith("fxq.nn."):
        return defined_in.startswith("fxq.nn.")
    if module in _CALLABLE_TORCH_MODULES and "." not in qualname and not qualname.startswith("__"):
        # C tensor functions, and Python ones only from torch's functional modules: torch.load, torch.save and
        # friends are Python functions defined elsewhere (torch.serialization)
        return inspect.isbuiltin(found) or defined_in in ("torch.functional", "torch.nn.functional") or (
            defined_in == "torch" and (qualname.startswith("sym_") or qualname == "_assert"))
    return False


def module_class_named(name: str) -> type[torch.nn.Module]:
    """A module class to build (torch's, fxq's, or the user's from a package already imported).

    Raises:
        LoadError: not an nn.Module subclass, or its module is not imported (the message says which to import).
    """
    found = _resolve(name)
    if found is None:
        module = name.partition(":")[0]
        raise LoadError(f"the model holds a {name.replace(':', '.')} module: import {module} before fxq.load (fxq "
                        "imports nothing but torch and itself while loading)")
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        raise LoadError(f"the file names {name} as a module class, but it is not an nn.Module; the file is "
                        "damaged or was tampered with")
    return found


def _treespec(text: str):
    try:
        return _pytree.treespec_loads(text)
    except (KeyError, ValueError, NotImplementedError) as err:
        raise LoadError(f"the model's inputs or outputs are of a type this process has not registered ({err}); "
                        "import the package that defines them (for example transformers) before fxq.load") from err


def _fxq_class(name: str) -> type:
    found = _resolve(name)
    if not (isinstance(found, type) and is_fxq(found)):
        raise LoadError(f"the file names {name} as one of fxq's classes, and it is not; the file is damaged or "
                        "was tampered with")
    return found


def is_fxq(cls: type) -> bool:
    """Whether ``cls`` is one of fxq's own classes."""
    return cls.__module__ == "fxq" or cls.__module__.startswith("fxq.")


def _resolve(name: str) -> Any:
    """The object ``name`` stands for, or None when its module is not imported (and may not be)."""
    module, _, qualname = name.partition(":")
    if module == "op":
        return _operator(qualname)
    return _lookup(module, qualname)


def _lookup(module_name: str, qualname: str) -> Any:
    module = sys.modules.get(module_name)
    if module is None and module_name.split(".")[0] in _IMPORTABLE_ROOTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    value = module
    for part in qualname.split("."):
        if value is None or part.startswith("__"):
            return None
        value = getattr(value, part, None)
    return value


def _operator(name: str):
    """``namespace::op.overload`` or ``namespace::op`` -> the registered operator (or None)."""
    namespace, _, rest = name.partition("::")
    op, _, overload = rest.partition(".")
    try:
        packet = getattr(getattr(torch.ops, namespace), op)
    except (AttributeError, RuntimeError):
        return None
    return getattr(packet, overload, None) if overload else packet
