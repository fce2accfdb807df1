"""Capture a model as a GraphModule, with one of two front ends, or the better of both.

- "fx": torch.fx symbolic tracing (``fxq.tracing``): module-level nodes, no example inputs needed to trace;
  cannot follow data-dependent Python (many Hugging Face models), whose submodules it keeps as float leaves.
- "export": ``torch.export.export(..., strict=False)``: runs the model on the example inputs and records aten
  ops; captures today's Hugging Face models. Every node keeps ``nn_module_stack``, so QConfigMapping rules by
  module name and type resolve exactly as on traced graphs.
- "auto": symbolic tracing first; if it fails, or had to keep submodules float, export; the result says which
  front end was used and why (``Captured.how`` / ``why``, and ``gm.meta["fxq_capture"]``).

Example inputs may include keyword arguments; ``Captured.inputs`` holds them as the positional arguments of the
captured graph, whose inputs keep the forward's argument names. A model whose forward takes ``use_cache`` (Hugging
Face decoders) is captured with ``use_cache=False`` unless the example sets it: a captured graph is one forward
computation, and torch.export cannot return a cache object.

The passes see one vocabulary either way: ``fxq.ops`` maps module, function, method and aten forms of an op to
one concept.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn
from torch.fx import GraphModule
from torch.utils import _pytree as pytree

from fxq.annotation import info
from fxq.errors import ConfigError, FxqWarning, TraceError, first_line
from fxq.model_inputs import as_positional
from fxq.tracing import Captured, trace

CAPTURES = ("fx", "export", "auto")
CAPTURE_KEY = "fxq_capture"


def capture(model: nn.Module, example_inputs: tuple, how: str = "fx", *, example_kwargs: dict | None = None,
            **trace_options) -> Captured:
    """``model`` (not modified) as a GraphModule, by ``how`` ("fx", "export" or "auto").

    Raises:
        ConfigError: an unknown ``how``, trace options export cannot honour, or example inputs that do not fit
            the captured forward.
        TraceError: the model cannot be captured; with "auto", one error reporting both front ends' failures.
    """
    if how not in CAPTURES:
        raise ConfigError(f"capture={how!r}: use one of {', '.join(CAPTURES)}")
    example_kwargs = dict(example_kwargs or {})
    if how == "fx":
        return _noted(_traced(model, example_inputs, example_kwargs, trace_options), "fx", "requested")
    if how == "export":
        _check_export_options(trace_options)
        return _noted(export(model, example_inputs, example_kwargs), "export", "requested")
    return _auto(model, example_inputs, example_kwargs, trace_options)


def _traced(model: nn.Module, args: tuple, kwargs: dict, trace_options: dict) -> Captured:
    traced = trace(model, **trace_options)
    traced.inputs = as_positional(traced.graph_module, tuple(args), kwargs, type(model).__name__)
    return traced


def _auto(model: nn.Module, example_inputs: tuple, example_kwargs: dict, trace_options: dict) -> Captured:
    with warnings.catch_warnings(record=True) as fx_warnings:
        warnings.simplefilter("always")
        try:
            traced = _traced(model, example_inputs, example_kwargs, trace_options)
            fx_error = None
        except TraceError as err:
            traced, fx_error = None, err
    if traced is not None and not traced.float_leaves:
        for caught in fx_warnings:
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
        return _noted(traced, "fx", "symbolic tracing captured the whole model")
    why = (f"symbolic tracing failed: {fx_error}" if fx_error is not None else
           "symbolic tracing had to keep submodules float: "
           + "; ".join(f"{leaf.path} ({leaf.error})" for leaf in traced.float_leaves))
    try:
        _check_export_options(trace_options)
        exported = export(model, example_inputs, example_kwargs)
    except (TraceError, ConfigError) as export_error:
        if traced is not None:  # fx with float leaves still beats nothing
            warnings.warn(f"capture='auto' kept symbolic tracing's result with float leaves: export failed too "
                          f"({export_error})", FxqWarning, stacklevel=3)
            return _noted(traced, "fx", f"{why}; export failed: {export_error}")
        raise TraceError(f"neither front end can capture {type(model).__name__}:\n  fx: {fx_error}\n"
                         f"  export: {export_error}\n  fix: make the untraceable part a submodule (fx's "
                         "leaf_modules=[...] keeps it whole, float), write data-dependent branches with torch.cond "
                         "for export, or use fxq.quantize_dynamic(model), which swaps modules and needs no graph"
                         ) from export_error
    return _noted(exported, "export", why)


def export(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None) -> Captured:
    """``torch.export`` (non-strict) on the example inputs, with dynamic dimensions; module paths and types come
    from ``nn_module_stack``. Keyword arguments fxq fixes (``use_cache=False``) are not inputs of the result.

    Raises:
        TraceError: export failed (names the model and the first line of torch's error).
    """
    args, user_kwargs = tuple(example_inputs), dict(example_kwargs or {})
    fixed = _fixed_kwargs(model, user_kwargs)
    try:
        program = _export_batch_free(model, args, {**user_kwargs, **fixed})
    except Exception as err:  # torch raises many kinds; all mean "cannot capture"
        raise TraceError(f"torch.export cannot capture {type(model).__name__}: {type(err).__name__}: "
                         f"{first_line(err)}") \
            from err
    gm = program.module()
    gm.validate_inputs = False  # its check wants the example's exact call form; Python binds names, guards sizes
    inputs = _take_positional(gm, args, user_kwargs, fixed) if user_kwargs or fixed else args
    _record_scopes(gm, model)
    return Captured(gm, [], how="export", inputs=inputs)


def _fixed_kwargs(model: nn.Module, user_kwargs: dict) -> dict:
    """``use_cache=False`` where the forward takes it and the user left it unset: a decoder's default returns a
    cache object, which a captured graph cannot (and a quantized forward computation does not need)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in parameters and "use_cache" not in user_kwargs else {}


def _take_positional(gm: GraphModule, args: tuple, user_kwargs: dict, fixed: dict) -> tuple:
    """Make ``gm`` take its inputs by position (keywords still bind by name) and return the examples so.

    Placeholders of the ``fixed`` keyword arguments go (their uses, torch.export's input guards among them, get
    the constant): the graph takes the user's arguments only.
    """
    placeholders = {node.name: node for node in gm.graph.nodes if node.op == "placeholder"}
    for name, value in fixed.items():
        node = placeholders[name]
        for user in list(node.users):
            user.args = tuple(value if arg is node else arg for arg in user.args)
        gm.graph.erase_node(node)
    codegen = gm.graph._codegen
    codegen.pytree_info = codegen.pytree_info._replace(
        orig_args=[name for name in codegen.pytree_info.orig_args if name not in fixed])
    gm.recompile()
    inputs = as_positional(gm, args, user_kwargs, type(gm).__name__)
    codegen.pytree_info = codegen.pytree_info._replace(in_spec=pytree.tree_structure((inputs, {})))
    gm.recompile()
    return inputs


def _export_batch_free(model: nn.Module, args: tuple, kwargs: dict):
    """Export with every dimension of every tensor input dynamic: a model exported for batch 8 x 64 tokens must
    still take batch 3 x 40 (export keeps a dimension static only where the model's code requires it). Images
    (float inputs of 4 or more dimensions) keep their size and take any batch: a vision model serves the resolution
    it was built for, and symbolic heights and widths made exporting a windowed one (a tiny Swin) take 150 s
    instead of 3 s and put ``sym_min`` in its graph, which TorchScript cannot run.

    Export fixes any dimension of size 1, so a batch-1 example (the usual latency setting) would give a model
    that refuses every other batch: such inputs are exported repeated to batch 2 (the program still takes
    batch 1), and as given only if the model cannot take two.
    """
    widened = pytree.tree_map(_batch_of_two, (args, kwargs))
    if any(wide is not value for wide, value in zip(pytree.tree_leaves(widened), pytree.tree_leaves((args, kwargs)),
                                                    strict=True)):
        try:
            return _export_dynamic(model, *widened)
        except Exception:  # noqa: BLE001 - the model needs batch 1: export it as given
            pass
    return _export_dynamic(model, args, kwargs)


def _batch_of_two(value):
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.repeat(2, *[1] * (value.dim() - 1))
    return value


def _export_dynamic(model: nn.Module, args: tuple, kwargs: dict):
    def dims(value):
        if not isinstance(value, torch.Tensor):
            return None
        image = value.is_floating_point() and value.dim() >= 4
        return {dim: torch.export.Dim.AUTO for dim in range(1 if image else value.dim())}

    if not kwargs:
        return torch.export.export(model, args, dynamic_shapes=tuple(dims(value) for value in args), strict=False)
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    dynamic = {name: pytree.tree_map(dims, value) for name, value in bound.items()}
    return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)


def _record_scopes(gm: GraphModule, root: nn.Module) -> None:
    """Module path and type per node from ``nn_module_stack`` (export records types by name: resolve them)."""
    modules = dict(root.named_modules())
    for node in gm.graph.nodes:
        record = info(node)
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        record.module_path = path
        record.module_type = type(modules[path]) if path in modules else type(root)


def _check_export_options(trace_options: dict) -> None:
    given = [name for name, value in trace_options.items() if value]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to symbolic tracing only; torch.export captures the whole "
                          "model (use capture='fx' with them)")


def _noted(captured: Captured, how: str, why: str) -> Captured:
    captured.how, captured.why = how, why
    captured.graph_module.meta[CAPTURE_KEY] = {"how": how, "why": why}
    return captured
