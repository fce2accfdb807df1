"""A module tree as plain data (``fxq.plain_data``): each module's class by name, its plain attributes, its
parameters and buffers as tensors, its children; a GraphModule's graph through ``fxq.graph_data``.

Reading builds each module without calling its constructor: an empty instance of the named class gets the
attributes back, as unpickling does, but the class must be an ``nn.Module`` from a package already imported and
every attribute plain data, so nothing in the file decides what code runs. What is not data (a Hugging Face
model's ``config`` object, a user's function kept as an attribute) is not saved; ``fxq.load(path, model=...)``
takes it from the float model. Modules whose kernels need opaque
objects (``RebuildsKernelState``) rebuild them from the tensors they keep. A module or tensor reached from two
places (a tied weight, a module called twice) is written once and comes back shared.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.converted import ConvertedGraphModule, as_converted
from fxq.errors import LoadError
from fxq.graph_data import data_to_graph, graph_to_data
from fxq.input_guard import recorded_inputs
from fxq.nn.quantized.kernel_state import RebuildsKernelState
from fxq.plain_data import EncodeError, UnresolvedName, decode, encode, is_fxq, module_class_named, name_of

_MODULE_STATE = frozenset(nn.Module().__dict__)  # nn.Module's own bookkeeping: parameters, hooks, ...
# GraphModule's: its graph (written as data), generated code and tracer (rebuilt from the graph), its meta
# (fxq.saving writes the records it needs)
_GRAPH_MODULE_STATE = frozenset(GraphModule(nn.Module(), torch.fx.Graph()).__dict__) | _MODULE_STATE


def module_to_data(module: nn.Module, skip: frozenset = frozenset()) -> dict:
    """``module`` and everything under it as plain data; modules in ``skip`` (and graph nodes calling them) are
    left out.

    Raises:
        EncodeError: a module with hooks (code), or an attribute that is not plain data; the message names the
            module's path and the attribute.
    """
    return _Writer(skip).module(module, "")


def data_to_module(data: dict, like: nn.Module | None = None) -> nn.Module:
    """The module tree ``module_to_data`` described. Attributes that were not data (a Hugging Face model's
    ``config``) come from the module at the same path in ``like``, the float model.

    Raises:
        LoadError: a class that is not an imported nn.Module, a call a graph may not make, a damaged entry, or
            attributes to take from ``like`` when it is not given or does not have them.
    """
    return _Reader(like).module(data)


class _Writer:
    def __init__(self, skip: frozenset) -> None:
        self.skip = skip
        self.seen: dict[int, str] = {}  # id of a module or tensor -> the path it was first written at

    def module(self, module: nn.Module, path: str) -> dict:
        if id(module) in self.seen:
            return {"same_as": self.seen[id(module)]}
        self.seen[id(module)] = path
        where = f"module {path!r} ({type(module).__name__})" if path else f"the root ({type(module).__name__})"
        hooks = [name for name, value in vars(module).items() if "hook" in name and value and isinstance(value, dict)]
        if hooks:
            raise EncodeError(f"{where} has {hooks[0]} registered: hooks are code, which fxq.save does not store; "
                              "remove them, save, and register them again after loading")
        data = {"parameters": {name: self.tensor(p, f"{path}.{name}") for name, p in module._parameters.items()},
                "buffers": {name: self.tensor(b, f"{path}.{name}") for name, b in module._buffers.items()},
                "non_persistent": sorted(module._non_persistent_buffers_set),
                "children": {name: self.module(child, _join(path, name)) for name, child in module._modules.items()
                             if child not in self.skip and name not in getattr(module, "_kernel_state", ())},
                "training": module.training}
        if isinstance(module, GraphModule):
            skipped = frozenset(n for n in module.graph.nodes
                                if n.op == "call_module" and module.get_submodule(str(n.target)) in self.skip)
            data["graph"] = self.part(where, lambda: graph_to_data(module.graph, skipped))
            data["converted"] = isinstance(module, ConvertedGraphModule)
            data["class_name"] = type(module).__name__
            own = _GRAPH_MODULE_STATE
        else:
            data["class"] = self.part(where, lambda: name_of(type(module)))
            own = _MODULE_STATE
        data["attributes"], data["unsaved"] = {}, {}
        for name, value in module.__getstate__().items():
            if name in own:
                continue
            try:
                data["attributes"][name] = encode(value)
            except EncodeError as err:
                if isinstance(module, GraphModule) or is_fxq(type(module)):
                    raise EncodeError(f"{where}, attribute {name!r}: {err}") from err
                data["unsaved"][name] = type(value).__name__  # a config object: the float model supplies it
        return data

    def tensor(self, tensor: torch.Tensor | None, path: str):
        if tensor is None:
            return None
        if id(tensor) in self.seen:
            return {"same_as": self.seen[id(tensor)]}
        self.seen[id(tensor)] = path
        return {"value": tensor.detach(), "requires_grad": tensor.requires_grad,
                "parameter": isinstance(tensor, nn.Parameter)}

    @staticmethod
    def part(where: str, write):
        try:
            return write()
        except EncodeError as err:
            raise EncodeError(f"{where}: {err}") from err


class _Reader:
    def __init__(self, like: nn.Module | None) -> None:
        self.like = like
        self.made: dict[str, object] = {}

    def module(self, data: dict, path: str = "") -> nn.Module:
        if "same_as" in data:
            return self.shared(data["same_as"])
        if "graph" in data:
            shell = nn.Module()
            self.fill(shell, data, path)
            module = GraphModule(shell, data_to_graph(data["graph"]), class_name=data["class_name"])
            _set_training(module, data)  # GraphModule made the containers on the way to what the graph calls
        else:
            cls = module_class_named(data["class"])
            module = cls.__new__(cls)
            nn.Module.__init__(module)
            self.fill(module, data, path)
        self.made[path] = module
        attributes = {name: decode(value) for name, value in data["attributes"].items()}
        unsaved = dict(data.get("unsaved", {}))
        unsaved.update({name: f"function {value.name}" for name, value in attributes.items()
                        if isinstance(value, UnresolvedName)})  # a user's function: theirs to supply
        module.__dict__.update(attributes)
        module.__dict__.update(self.unsaved(module, unsaved, path))
        module.training = bool(data["training"])
        if data.get("converted"):
            as_converted(module, recorded_inputs(module))
            module.recompile()
        if isinstance(module, RebuildsKernelState):
            module._repack()
        return module

    def unsaved(self, module: nn.Module, names: dict[str, str], path: str) -> dict:
        """The attributes fxq.save could not write, from the float model's module at ``path``."""
        if not names:
            return {}
        name, kind = next(iter(names.items()))
        kind = kind if kind.startswith("function ") else f"a {kind}"
        where = f"module {path!r} ({type(module).__name__})" if path else f"the root ({type(module).__name__})"
        if self.like is None:
            raise LoadError(f"{where} keeps attribute {name!r} ({kind}), which fxq.load does not restore from a file: "
                            "pass the float model it was quantized from, fxq.load(path, model=float_model)")
        try:
            template = self.like.get_submodule(path)
        except AttributeError as err:
            raise LoadError(f"the model given to fxq.load has no module {path!r}; pass the float model this file "
                            "was quantized from") from err
        missing = [n for n in names if n not in template.__dict__]
        if missing:
            raise LoadError(f"the model given to fxq.load has no attribute {missing[0]!r} on {where}; pass the "
                            "float model this file was quantized from")
        return {n: template.__dict__[n] for n in names}

    def fill(self, module: nn.Module, data: dict, path: str) -> None:
        for name, entry in data["parameters"].items():
            value = self.tensor(entry, f"{path}.{name}")
            module._parameters[name] = value if value is None or isinstance(value, nn.Parameter) else \
                nn.Parameter(value, requires_grad=value.requires_grad)
        for name, entry in data["buffers"].items():
            module._buffers[name] = self.tensor(entry, f"{path}.{name}")
        module._non_persistent_buffers_set.update(data["non_persistent"])
        for name, child in data["children"].items():
            module._modules[name] = self.module(child, _join(path, name))

    def tensor(self, entry, path: str):
        if entry is None:
            return None
        if "same_as" in entry:
            return self.shared(entry["same_as"])
        value = entry["value"]
        if not isinstance(value, torch.Tensor):
            raise LoadError(f"{path!r} should hold a tensor and holds a {type(value).__name__}; the file is damaged")
        tensor = nn.Parameter(value, requires_grad=bool(entry["requires_grad"])) if entry["parameter"] else value
        self.made[path] = tensor
        return tensor

    def shared(self, path: str):
        if path not in self.made:
            raise LoadError(f"the file refers to {path!r} before writing it; the file is damaged")
        return self.made[path]


def _set_training(module: nn.Module, data: dict) -> None:
    module.training = bool(data.get("training", module.training))
    for name, child in data.get("children", {}).items():
        if name in module._modules:
            _set_training(module._modules[name], child)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
