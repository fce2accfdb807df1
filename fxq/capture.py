"""Capture a model as a GraphModule, with one of two front ends, or the better of both.

- "fx": torch.fx symbolic tracing (``fxq.tracing``): module-level nodes, no example inputs needed to trace;
  cannot follow data-dependent Python (many Hugging Face models), whose submodules it keeps as float leaves.
- "export": ``torch.export.export(..., strict=False)``: runs the model on the example inputs and records aten
  ops; captures today's Hugging Face models. Every node keeps ``nn_module_stack``, so QConfigMapping rules by
  module name and type resolve exactly as on traced graphs.
- "auto": symbolic tracing first; if it fails, or had to keep submodules float, export; the result says which
  front end was used and why (``Captured.how`` / ``why``, and ``gm.meta["fxq_capture"]``).

The passes see one vocabulary either way: ``fxq.ops`` maps module, function, method and aten forms of an op to
one concept.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.annotation import info
from fxq.errors import ConfigError, FxqWarning, TraceError
from fxq.tracing import Captured, trace

CAPTURES = ("fx", "export", "auto")
CAPTURE_KEY = "fxq_capture"


def capture(model: nn.Module, example_inputs: tuple, how: str = "fx", **trace_options) -> Captured:
    """``model`` (not modified) as a GraphModule, by ``how`` ("fx", "export" or "auto").

    Raises:
        ConfigError: an unknown ``how``, or trace options export cannot honour.
        TraceError: the model cannot be captured; with "auto", one error reporting both front ends' failures.
    """
    if how not in CAPTURES:
        raise ConfigError(f"capture={how!r}: use one of {', '.join(CAPTURES)}")
    if how == "fx":
        return _noted(trace(model, **trace_options), "fx", "requested")
    if how == "export":
        _check_export_options(trace_options)
        return _noted(export(model, example_inputs), "export", "requested")
    return _auto(model, example_inputs, trace_options)


def _auto(model: nn.Module, example_inputs: tuple, trace_options: dict) -> Captured:
    with warnings.catch_warnings(record=True) as fx_warnings:
        warnings.simplefilter("always")
        try:
            traced = trace(model, **trace_options)
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
        exported = export(model, example_inputs)
    except (TraceError, ConfigError) as export_error:
        if traced is not None:  # fx with float leaves still beats nothing
            warnings.warn(f"capture='auto' kept symbolic tracing's result with float leaves: export failed too "
                          f"({export_error})", FxqWarning, stacklevel=3)
            return _noted(traced, "fx", f"{why}; export failed: {export_error}")
        raise TraceError(f"neither front end can capture {type(model).__name__}:\n  fx: {fx_error}\n"
                         f"  export: {export_error}") from export_error
    return _noted(exported, "export", why)


def export(model: nn.Module, example_inputs: tuple) -> Captured:
    """``torch.export`` (non-strict) on the example inputs, with dynamic dimensions; module paths and types come
    from ``nn_module_stack``.

    Raises:
        TraceError: export failed (names the model and the first line of torch's error).
    """
    try:
        program = _export_batch_free(model, tuple(example_inputs))
    except Exception as err:  # torch raises many kinds; all mean "cannot capture"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TraceError(f"torch.export cannot capture {type(model).__name__}: {type(err).__name__}: {first}") \
            from err
    gm = program.module()
    _record_scopes(gm, model)
    return Captured(gm, [], how="export")


def _export_batch_free(model: nn.Module, example_inputs: tuple):
    """Export with every dimension of every tensor input dynamic: a model exported for batch 8 x 64 tokens must
    still take batch 3 x 40 (export keeps a dimension static only where the model's code requires it).

    Export fixes any dimension of size 1, so a batch-1 example (the usual latency setting) would give a model
    that refuses every other batch: such inputs are exported repeated to batch 2 (the program still takes
    batch 1), and as given only if the model cannot take two.
    """
    widened = tuple(value.repeat(2, *[1] * (value.dim() - 1))
                    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1 else value
                    for value in example_inputs)
    if any(wide is not value for wide, value in zip(widened, example_inputs, strict=True)):
        try:
            return _export_dynamic(model, widened)
        except Exception:  # noqa: BLE001 - the model needs batch 1: export it as given
            pass
    return _export_dynamic(model, example_inputs)


def _export_dynamic(model: nn.Module, inputs: tuple):
    dynamic = tuple({dim: torch.export.Dim.AUTO for dim in range(value.dim())} if isinstance(value, torch.Tensor)
                    else None for value in inputs)
    return torch.export.export(model, inputs, dynamic_shapes=dynamic, strict=False)


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
