"""The entry points. Each is a named list of passes plus options: nothing here transforms a graph itself.

``prepare`` never mutates the user's model: it works on a deep copy. A model in training mode given to
(post-training) ``prepare`` is quantized as if in eval mode, on the copy, with an ``FxqWarning``: post-training
quantization folds batch norms with their running statistics and removes dropout, which only eval mode means.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.annotation import copy_graph_module
from fxq.backends import get_backend, native_backend, qconfig_family
from fxq.capture import capture as capture_model
from fxq.converted import ConvertedGraphModule, as_converted
from fxq.errors import CalibrationError, ConfigError, FxqWarning
from fxq.gc_pause import paused_gc
from fxq.graph_pass import PassContext, add_properties, properties_of
from fxq.input_guard import input_records
from fxq.model_inputs import call_with, split_call, without_labels
from fxq.nn.parametrizations import bake_parametrizations
from fxq.nn.transposed_linear import replace_transposed_linears
from fxq.observers import Observer
from fxq.pass_manager import PassManager, PassRecord
from fxq.pipelines import TRACED, check, combined, convert_steps, instances, parse_passes, prepare_steps
from fxq.precision import PrecisionPlan
from fxq.recipes import RECIPE_KEY, Recipe, choose_recipe
from fxq.runtime import EXAMPLES_KEY, check_runtime_name, install_runtime, keep_examples
from fxq.shared_weights import warn_duplicated_weights
from fxq.torch_ao_objects import translate_mapping
from fxq.tracing import TRACE_OPTIONS_KEY

QAT_KEY = "fxq_qat"
PASSES_KEY = "fxq_convert_passes"  # the edits of prepare's ``passes=`` that convert applies

_BACKEND_KEY = "fxq_backend"
RECORDS_KEY = "fxq_records"
_LEAVES_KEY = "fxq_float_leaves"


def prepare(model: nn.Module, qconfig_mapping, example_inputs, *, backend: str | None = None,
            leaf_modules: Iterable[str] = (), leaf_module_types: Iterable[type] = (),
            concrete_args: dict | None = None, keep_snapshots: bool = False, capture: str = "auto",
            recipe: str | Recipe = "auto", precision: PrecisionPlan | dict | None = None,
            passes=None) -> GraphModule:
    """Trace a copy of ``model`` and insert observers; run calibration data through the result, then ``convert``.

    Args:
        model: the float model; it is not modified.
        qconfig_mapping: which qconfig each op gets; None for ``fxq.get_default_qconfig_mapping(backend)``
            (as ``quantize`` and ``prepare_qat`` take it); a qconfig dict
            (``{"": qconfig, "object_type": [...], "module_name": [...]}``) and torch.ao's QConfigMapping and
            QConfig objects are translated (``fxq.torch_ao_objects``).
        example_inputs: a tuple of inputs ``model(*example_inputs)`` accepts (a lone tensor is wrapped), or a
            dict of keyword arguments (``model(**example_inputs)``, e.g. a tokenizer's output). See
            ``fxq.model_inputs``.
        backend: the backend whose table decides what is quantized: "x86" or "qnnpack" (native int8 kernels), or
            "reference" (explicit quantize/dequantize around float ops, to read the math). Default: the native
            one for torch's quantized engine (``fxq.backends.native_backend``: x86, or qnnpack on ARM builds).
        leaf_modules / leaf_module_types: submodules to keep whole (not traced through, left float if unknown).
        concrete_args: forward arguments to fix to Python values while tracing.
        capture: "auto" (default: symbolic tracing, else ``torch.export`` where tracing fails or would keep
            submodules whole in float, such as Hugging Face transformers or ``nn.TransformerEncoder``;
            ``prepared.meta["fxq_capture"]`` says which and why), "fx" (tracing only; ``fxq.compat`` uses it,
            as torch.ao did) or "export". See ``fxq.capture``.
        recipe: "auto" (chosen from the graph: "transformer" for attention with layer norms, "cnn" for
            convolutions), "transformer", "cnn", "none", or a ``fxq.recipes.Recipe``; ``prepared.meta["fxq_recipe"]``
            says which and why. A recipe keeps some ops float and adds passes, only where the mapping's rule for
            an op is its global one: explicit rules win. See ``fxq.recipes``.
        precision: a per-layer precision plan, module path -> "int8", "w4a8", "int8-dynamic", "fp16" or
            "float" (a dict, or a ``fxq.precision.PrecisionPlan``); it overrides the global qconfig and the recipe,
            not the mapping's explicit rules. See ``fxq.precision``.
        passes: changes to the pass pipelines, checked before any pass runs: passes inserted at named points
            (``{"after fuse": ["my-pass"], "before lower": "other{bits=4}"}``; points in convert's pipeline are
            kept for ``convert``) or whole pipelines (``{"prepare": "...", "convert": "..."}``, or a spec
            string). See ``fxq.pipelines``.
        keep_snapshots: keep the graph after each pass (``prepared.meta["fxq_records"]``).
    Returns:
        The prepared GraphModule (observers inserted), in eval mode.
    Raises:
        ConfigError, TraceError: bad options, or a model that cannot be captured.
    """
    from fxq.qconfig_mapping import get_default_qconfig_mapping

    backend = backend if backend is not None else native_backend()
    if qconfig_mapping is None:
        qconfig_mapping = get_default_qconfig_mapping(qconfig_family(backend))
    return _prepare(model, qconfig_mapping, example_inputs, backend=backend, leaf_modules=leaf_modules,
                    leaf_module_types=leaf_module_types, concrete_args=concrete_args, keep_snapshots=keep_snapshots,
                    capture=capture, recipe=recipe, precision=precision, passes=passes, training=False)


def _prepare(model: nn.Module, qconfig_mapping, example_inputs, *, backend: str, leaf_modules, leaf_module_types,
             concrete_args, keep_snapshots: bool, capture: str, recipe, precision, passes, training: bool) -> GraphModule:
    """``prepare``, or with ``training`` ``fxq.prepare_qat``: the same passes, the recipe without its
    calibration-statistics corrections, then ``fake-quantize``, in training mode."""
    backend = backend if backend is not None else native_backend()
    get_backend(backend)
    edits = parse_passes(passes)
    qconfig_mapping = translate_mapping(qconfig_mapping)  # a qconfig dict, or torch.ao's objects
    args, kwargs = split_call(example_inputs)
    with paused_gc():
        work = _eval_copy(model, "prepare_qat" if training else "prepare", warn_training=not training)
        bake_parametrizations(work)  # weight norm and the like: quantize the weight they compute
        replace_transposed_linears(work)  # GPT-2's Conv1D quantizes as the Linear it is
        options = {"leaf_modules": tuple(leaf_modules), "leaf_module_types": tuple(leaf_module_types),
                   "concrete_args": concrete_args}
        captured = capture_model(work, args, capture, example_kwargs=kwargs, **options)
        gm, example_inputs = captured.graph_module, captured.inputs
        if not example_inputs and gm.graph.find_nodes(op="placeholder"):
            raise ConfigError(f"example_inputs is empty, but {type(model).__name__}.forward takes inputs: pass a "
                              "tuple of them (or a dict of keyword arguments); prepare runs them to learn which "
                              "values are float tensors")
        add_properties(gm, TRACED)
        chosen, why = choose_recipe(gm, recipe)
        chosen = chosen.for_training() if training else chosen
        steps, later = prepare_steps(edits, chosen, training)
        check(convert_steps(later, chosen, training), check(steps, TRACED))  # both, before any pass runs
        plan = precision if precision is None or isinstance(precision, PrecisionPlan) else PrecisionPlan(precision)
        ctx = PassContext(qconfig_mapping=qconfig_mapping, backend=backend, example_inputs=example_inputs,
                          original=model, recipe=chosen, precision_plan=plan, training=training)
        result = PassManager(instances(steps), keep_snapshots=keep_snapshots).run(gm, ctx)
    prepared = result.graph_module
    prepared.meta[_BACKEND_KEY] = backend
    prepared.meta[RECORDS_KEY] = result.records
    prepared.meta[RECIPE_KEY] = {"name": chosen.name, "why": why, "recipe": chosen}
    prepared.meta[PASSES_KEY] = later
    prepared.meta[_LEAVES_KEY] = captured.float_leaves
    prepared.meta[TRACE_OPTIONS_KEY] = {"how": captured.how, **options}
    prepared.meta[EXAMPLES_KEY] = keep_examples(example_inputs)  # what convert checks a faster runtime on
    prepared.meta[QAT_KEY] = training
    if training:  # torch.export's module refuses train()/eval(); fxq's fake quantization needs them
        for method in ("train", "eval"):
            prepared.__dict__.pop(method, None)
    return _set_mode(prepared, training)


def convert(prepared: GraphModule, *, keep_snapshots: bool = False, inplace: bool = False,
            backend: str | None = None, runtime: str = "auto", passes=None) -> GraphModule:
    """Lower a calibrated prepared model to the backend's quantized form; ``prepared`` is left as it was unless
    ``inplace`` (which saves copying it: for callers that no longer need it).

    ``backend="reference"`` lowers a model prepared for a native backend to explicit quantize/dequantize around
    float ops instead of kernels: the same decisions and qparams, so it shows the math the kernels should compute.

    ``runtime`` says what runs the returned GraphModule's calls: "graph" (its generated Python), "torchscript" (a
    frozen TorchScript copy: the same kernels without Python between ops) or "auto" (TorchScript if it is
    bit-exact and faster on the example inputs). ``result.meta["fxq_runtime"]`` says which and why; see
    ``fxq.runtime``.

    ``passes`` changes the convert pipeline as ``prepare``'s does (insertions add to those ``prepare`` kept; a
    ``"convert"`` pipeline replaces the default). See ``fxq.pipelines``.

    Raises:
        ConfigError: ``prepared`` did not come from ``fxq.prepare``, or is converted already; ``backend`` is
            neither "reference" nor the one ``prepared`` was made for; an unknown ``runtime``.
        CalibrationError: an observer saw no data (run calibration batches through ``prepared`` first).
    """
    check_runtime_name(runtime)
    _check_convertible(prepared)
    given = parse_passes(passes)
    if given.prepare is not None:
        raise ConfigError("convert(passes=...) changes convert's pipeline: give it as {'convert': ...} or "
                          "insertions such as {'before lower': ...}; prepare's pipeline ran already")
    recipe = prepared.meta.get(RECIPE_KEY, {}).get("recipe")
    steps = convert_steps(combined(prepared.meta.get(PASSES_KEY, parse_passes(None)), given), recipe,
                          bool(prepared.meta.get(QAT_KEY)))
    check(steps, properties_of(prepared))
    observers = [m for m in prepared.modules() if isinstance(m, Observer)]  # read, never changed, by convert
    with paused_gc():
        gm = prepared if inplace else copy_graph_module(prepared, share=observers)
        inputs = input_records(gm)
        as_converted(gm, inputs)  # before the passes, whose final recompile then installs its forward
        ctx = PassContext(backend=_lowering_backend(prepared, backend), recipe=recipe)
        result = PassManager(instances(steps), keep_snapshots=keep_snapshots).run(gm, ctx)
    converted = result.graph_module
    if not isinstance(converted, ConvertedGraphModule):  # a pass returned a new module
        as_converted(converted, inputs).recompile()
    converted.meta[RECORDS_KEY] = list(prepared.meta.get(RECORDS_KEY, [])) + result.records
    warn_duplicated_weights(converted)
    install_runtime(_set_mode(converted, False), runtime)
    return converted


def _lowering_backend(prepared: GraphModule, requested: str | None) -> str:
    prepared_for = prepared.meta.get(_BACKEND_KEY, "reference")
    if requested is None or requested == "reference" or get_backend(requested) is get_backend(prepared_for):
        return requested or prepared_for
    raise ConfigError(f"convert(backend={requested!r}) got a model prepared for {prepared_for!r}: the backend's "
                      "table decided what prepare observed, so lower it for that backend (or 'reference'), or "
                      f"prepare the float model again with backend={requested!r}")


def _check_convertible(prepared) -> None:
    """Refuse, with the fix, what convert cannot lower: anything but a calibrated model from fxq.prepare."""
    what = type(prepared).__name__
    if not isinstance(prepared, nn.Module):
        raise ConfigError(f"convert() takes the model returned by fxq.prepare() after calibration; got a {what}")
    if not isinstance(prepared, GraphModule):
        raise ConfigError(f"convert() takes the model returned by fxq.prepare() after calibration; got a {what}, a "
                          "plain nn.Module: call fxq.prepare(model, qconfig_mapping, example_inputs), run "
                          "calibration data through the result, then convert that (or use fxq.quantize)")
    properties = properties_of(prepared)
    if "lowered" in properties or isinstance(prepared, ConvertedGraphModule):
        raise ConfigError("convert() got a model that is already converted (it holds quantized ops, not "
                          "observers): use it as it is, or convert the model fxq.prepare() returned")
    if "observed" not in properties:
        raise ConfigError("convert() got a torch.fx GraphModule that fxq.prepare() did not produce (it has no "
                          "observers, or lost fxq's records through torch.save or copy.copy): prepare the float "
                          "model with fxq.prepare(), and keep prepared models with fxq.save or copy.deepcopy")


def quantize(model: nn.Module, example_inputs, calibration_data: Iterable, *, backend: str | None = None,
             qconfig_mapping=None, runtime: str = "auto", **prepare_options) -> GraphModule:
    """Static post-training quantization in one call: prepare, calibrate, convert, and report.

    Args:
        calibration_data: batches of representative inputs; each is a tuple of forward arguments (a lone tensor
            is wrapped) or a dict of keyword arguments. Items past the model's inputs (a DataLoader's labels) are
            dropped, with a warning.
        qconfig_mapping: defaults to ``get_default_qconfig_mapping(backend)``.
        runtime: what runs the result's calls ("auto", "graph" or "torchscript"; see ``convert``).
        prepare_options: passed to ``prepare`` (recipe, capture, leaf_modules, concrete_args, ...).
    Returns:
        The quantized GraphModule; ``fxq.report_of(result)`` says what was quantized, what stayed float and
        why, and the size before and after.
    Raises:
        CalibrationError: ``calibration_data`` was empty, or held NaN/Inf.
    """
    from fxq.report import REPORT_KEY, build_report

    check_runtime_name(runtime)
    backend = backend if backend is not None else native_backend()
    prepared = prepare(model, qconfig_mapping, example_inputs, backend=backend, **prepare_options)
    batches, inputs, warned = 0, sum(node.op == "placeholder" for node in prepared.graph.nodes), False
    with torch.no_grad():
        for batch in calibration_data:
            batch, dropped = without_labels(batch, inputs)
            if dropped and not warned:
                warnings.warn(f"calibration batch {batches} holds {inputs + dropped} items and the model takes "
                              f"{inputs} input(s): the last {dropped} (labels, as a DataLoader of (inputs, labels) "
                              "yields) are not passed to it", FxqWarning, stacklevel=2)
                warned = True
            call_with(prepared, batch)
            batches += 1
    if batches == 0:
        raise CalibrationError("quantize() got no calibration batches; pass an iterable of representative inputs")
    converted = convert(prepared, runtime=runtime)
    converted.meta[REPORT_KEY] = build_report(model, converted, backend)
    return converted


def report_of(quantized: nn.Module):
    """What ``quantize`` or ``quantize_dynamic`` did to produce ``quantized`` (None for models from ``convert``)."""
    from fxq.dynamic import REPORT_ATTRIBUTE
    from fxq.report import REPORT_KEY

    if isinstance(quantized, GraphModule) and REPORT_KEY in quantized.meta:
        return quantized.meta[REPORT_KEY]
    return getattr(quantized, REPORT_ATTRIBUTE, None)


def pass_records(gm: GraphModule) -> list[PassRecord]:
    """The per-pass records (name, time, node counts, snapshot) of the pipelines that produced ``gm``."""
    return list(gm.meta.get(RECORDS_KEY, []))


def _set_mode(gm: GraphModule, training: bool) -> GraphModule:
    """``gm`` with every module in training or eval mode. Set directly: a module from ``torch.export`` refuses
    ``.train()``/``.eval()``."""
    for module in gm.modules():
        module.training = training
    return gm


def _check_float32(model: nn.Module, entry: str) -> None:
    """The graph pipeline quantizes float32 models: torch's int8 kernels take and give float32 activations, so a
    bfloat16, float16 or float64 model would calibrate and convert, then fail on its first call."""
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and parameter.dtype != torch.float32:
            raise ConfigError(f"fxq's graph pipeline ({entry}, quantize) takes float32 models, and parameter "
                              f"{name!r} is {parameter.dtype}: "
                              f"pass model.float() and float32 inputs (torch's int8 kernels compute from float32 "
                              "activations; the int8 model is still half the size of a 16-bit one), or use "
                              "fxq.quantize_dynamic(model), which keeps the model's dtype between its int8 layers")


def _eval_copy(model: nn.Module, entry: str, warn_training: bool = True) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{entry}() takes an nn.Module, got {type(model).__name__}")
    _check_float32(model, entry)
    work = copy.deepcopy(model)
    if model.training and warn_training:
        warnings.warn(f"{type(model).__name__} is in training mode; {entry}() quantizes an eval-mode copy "
                      "(batch norms use running statistics, dropout is off). Your model is unchanged. "
                      "Call model.eval() first to silence this, or use prepare_qat() to train.",
                      FxqWarning, stacklevel=4)  # the caller of prepare(), past _prepare
    return work.eval()
