"""Capture a model as a GraphModule with torch.fx symbolic tracing, plus the options quantization needs.

Options: submodules to keep whole (by path or type) and concrete arguments. Every node records the module it
came from (``info(node).module_path`` / ``module_type``), which QConfigMapping rules match. A submodule whose
forward cannot be traced (data-dependent control flow, iterating a Proxy...) is retried as a leaf, kept in
float and reported; if the root's own forward fails, a ``TraceError`` names the line and the workaround.
"""

from __future__ import annotations

import difflib
import linecache
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import GraphModule, Tracer

from fxq.annotation import info, leave_float
from fxq.errors import ConfigError, FxqWarning, TraceError, first_line
from fxq.ops import concept_of_module

TRACE_OPTIONS_KEY = "fxq_trace_options"  # prepare keeps its trace options here, so tools trace the float model alike

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class FloatLeaf:
    """A submodule kept whole because it could not be traced: its path, type, the error and where it arose."""

    path: str
    type_name: str
    error: str
    location: str


@dataclass
class Captured:
    """The captured graph, the submodules left as float leaves, which front end captured it, and the example
    inputs as the graph's positional arguments."""

    graph_module: GraphModule
    float_leaves: list[FloatLeaf] = field(default_factory=list)
    how: str = "fx"
    why: str = ""
    inputs: tuple = ()


class _Failure(Exception):
    """Tracing failed inside submodule ``path`` (the deepest one on the call stack), with the original error."""

    def __init__(self, path: str, error: BaseException) -> None:
        super().__init__(path)
        self.path, self.error = path, error


class QuantTracer(Tracer):
    """torch.fx's tracer with extra leaves and a record of which submodule was running when tracing failed."""

    def __init__(self, leaf_paths: set[str] = frozenset(), leaf_types: tuple[type, ...] = ()) -> None:
        # defaults: torch.load rebuilds a saved GraphModule by tracing its code with this class, argument-less
        super().__init__()
        self.leaf_paths, self.leaf_types = leaf_paths, leaf_types
        self._stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_paths or isinstance(m, self.leaf_types) or getattr(m, "_fxq_leaf", False):
            return True
        if isinstance(m, _CONTAINERS):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self._stack.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except _Failure:
            raise
        except Exception as err:
            if path and not self.is_leaf_module(m, path):
                raise _Failure(path, err) from err
            raise
        finally:
            self._stack.pop()


def trace(model: nn.Module, *, leaf_modules: Iterable[str] = (), leaf_module_types: Iterable[type] = (),
          concrete_args: dict | None = None, retry_as_leaf: bool = True) -> Captured:
    """Symbolically trace ``model`` (which is not modified) into a GraphModule.

    As with torch.fx, the GraphModule holds ``model``'s own submodules; passes rewrite those in place, which is
    why ``fxq.prepare`` traces a deep copy. Do the same when running passes by hand.

    Args:
        leaf_modules: submodule paths to keep whole, not traced through.
        leaf_module_types: submodule types to keep whole.
        concrete_args: forward arguments fixed to Python values during tracing.
        retry_as_leaf: keep a submodule that fails to trace as a float leaf instead of failing.
    Raises:
        ConfigError: a leaf path that does not exist, or a leaf type that is not a module type.
        TraceError: the model cannot be traced (names the module, the line and the workaround).
    """
    names = {name for name, _ in model.named_modules()}
    leaf_paths = set(leaf_modules)
    for path in sorted(leaf_paths - names):
        close = difflib.get_close_matches(path, sorted(names), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"leaf_modules names {path!r}, which is not a submodule of {type(model).__name__}{hint}")
    leaf_types = tuple(leaf_module_types)
    for leaf_type in leaf_types:
        if not (isinstance(leaf_type, type) and issubclass(leaf_type, nn.Module)):
            raise ConfigError(f"leaf_module_types must hold nn.Module subclasses; got {leaf_type!r}")

    failures: list[FloatLeaf] = []
    while True:
        tracer = QuantTracer(leaf_paths, leaf_types)
        try:
            graph = tracer.trace(model, concrete_args=concrete_args)
            break
        except _Failure as failure:
            leaf = _float_leaf(model, failure.path, failure.error)
            if not retry_as_leaf or failure.path in leaf_paths:
                raise _trace_error(leaf, failure.error) from failure.error
            failures.append(leaf)
            leaf_paths.add(failure.path)
        except Exception as err:
            raise _trace_error(_float_leaf(model, "", err), err) from err

    gm = GraphModule(tracer.root, graph, type(model).__name__)
    _record_scopes(gm, model)
    for leaf in failures:
        for node in gm.graph.nodes:
            if node.op == "call_module" and node.target == leaf.path:
                leave_float(node, f"could not be traced: {leaf.error} at {leaf.location}; kept as a float leaf")
    if failures:
        listed = "; ".join(f"{leaf.path} ({leaf.type_name}): {leaf.error}" for leaf in failures)
        warnings.warn(f"kept untraceable submodules whole, in float: {listed}. Pass leaf_modules=[...] to do "
                      "this on purpose, or make their forward traceable to quantize them.", FxqWarning,
                      stacklevel=2)
    opaque = _opaque_torch_leaves(gm, set(leaf_modules), leaf_types)
    if opaque:
        listed = "; ".join(f"{leaf.path} ({leaf.type_name})" for leaf in opaque)
        warnings.warn(f"symbolic tracing keeps torch.nn modules whole, so the weights inside them stay float: "
                      f"{listed}. capture='export' (or 'auto') quantizes inside them.", FxqWarning, stacklevel=2)
    gm.graph.lint()
    return Captured(gm, failures + opaque)


def _opaque_torch_leaves(gm: GraphModule, chosen_paths: set[str], chosen_types: tuple) -> list[FloatLeaf]:
    """Calls of torch.nn modules that torch.fx keeps whole (``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer``...), that fxq has no op for and that hold weight matrices: everything inside
    them runs float, unseen by the passes (a TransformerEncoder model: size 1.00x traced, 0.42x exported). Leaves
    the user chose are not reported."""
    modules = dict(gm.named_modules())
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in chosen_paths or info(node).float_reason:
            continue
        module = modules[node.target]
        if isinstance(module, chosen_types) or getattr(module, "_fxq_leaf", False) \
                or concept_of_module(module) is not None \
                or not any(parameter.dim() >= 2 for parameter in module.parameters()):
            continue
        why = (f"torch.fx keeps torch.nn's {type(module).__name__} whole, and fxq has no quantized form of it: "
               "its weights run float")
        leave_float(node, why)
        found.append(FloatLeaf(node.target, type(module).__name__, why, ""))
    return found


def _record_scopes(gm: GraphModule, root: nn.Module) -> None:
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        record = info(node)
        if node.op == "call_module":
            record.module_path, record.module_type = node.target, type(modules[node.target])
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, module_type = list(stack.values())[-1]
            record.module_path, record.module_type = path, module_type
        else:
            record.module_path, record.module_type = "", type(root)


def _float_leaf(model: nn.Module, path: str, error: BaseException) -> FloatLeaf:
    module = model.get_submodule(path) if path else model
    return FloatLeaf(path, type(module).__name__, f"{type(error).__name__}: {first_line(error)}",
                     _user_location(error))


def _user_location(error: BaseException) -> str:
    """file:line and source text of the innermost frame outside torch (the model's own code)."""
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    fxq_dir = __file__.rsplit("/", 1)[0]
    found = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith((torch_dir, fxq_dir)) or frame.filename.startswith("<"):
            continue
        code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        found = f"{frame.filename}:{frame.lineno}: {code}"
    return found or "unknown location"


def _trace_error(leaf: FloatLeaf, error: BaseException) -> TraceError:
    if leaf.path:
        what = f"submodule {leaf.path!r} ({leaf.type_name})"
        fix = (f"pass leaf_modules=[{leaf.path!r}] to keep it whole in float, or make its forward traceable "
               "(no Python control flow on tensor values)")
    else:
        what = f"the root module {leaf.type_name}"
        fix = ("move the untraceable code into a submodule and pass it in leaf_modules=[...], or fix Python "
               "values it branches on with concrete_args={...}")
    return TraceError(f"cannot trace {what}: {leaf.error}\n  at {leaf.location}\n  fix: {fix}")
