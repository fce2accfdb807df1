"""Dynamic and weight-only quantization by module swap: no tracing, no calibration, works on any model.

``quantize_dynamic`` replaces chosen submodules of a copy of the model with fxq's runtime modules:
- ``nn.Linear`` -> ``DynamicLinear`` (qint8 weight, activations quantized per call; or an fp16 weight),
- ``nn.LSTM`` / ``nn.GRU`` -> ``DynamicLSTM`` / ``DynamicGRU`` (qint8 weights, dynamic activations),
- ``nn.Embedding`` / ``nn.EmbeddingBag`` -> ``QuantizedEmbedding`` (8- or 4-bit rows, weight-only),
- with a ``WeightOnly`` config, ``nn.Linear`` -> ``WeightOnlyLinear`` (int8/int4 group-wise weights).
GPT-2's ``Conv1D`` (a Linear with its weight transposed) counts as ``nn.Linear`` everywhere above.

A spec naming a module type fxq cannot quantize this way is an error listing the ones it can (a silent no-op
would let a user believe a layer was quantized). Modules of a requested type that cannot be converted (an LSTM
with ``proj_size``, an EmbeddingBag in max mode) stay float and the report lists each with the reason. A
type the user asked for that the model does not contain is a report line, and a call that converts nothing
warns.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from fxq.errors import ConfigError, FxqWarning
from fxq.linear_input_moments import linear_input_moments
from fxq.nn.fused import FusedModule
from fxq.nn.parametrizations import bake_parametrizations
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.dynamic_rnn import DynamicGRU, DynamicLSTM
from fxq.nn.quantized.embedding import QuantizedEmbedding
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear
from fxq.nn.transposed_linear import as_linear, is_transposed_linear
from fxq.qconfig import default_weight
from fxq.qconfig_mapping import with_suggestion
from fxq.quantize_tensor import quantize_with
from fxq.report import serialized_size

REPORT_ATTRIBUTE = "_fxq_report"


@dataclass(frozen=True)
class Dynamic:
    """Weights in ``dtype`` (torch.qint8 or torch.float16), activations quantized on the fly (qint8 only)."""

    dtype: torch.dtype = torch.qint8


@dataclass(frozen=True)
class WeightOnly:
    """Weights in ``bits`` (8 or 4), activations float between layers (fxq's weight-only kernels round them to 8
    bits per weight group inside the product). Linear weights get one scale per ``group_size`` input columns;
    embedding tables one scale and offset per row."""

    bits: int = 8
    group_size: int = 128


DEFAULT_SPEC = (nn.Linear, nn.LSTM, nn.GRU)
# With the default spec in int8, embedding tables take 8-bit rows too, as static quantization stores them: left
# float they kept a BERT-base at 0.42x of its float size.
DEFAULT_TABLES = (nn.Embedding, nn.EmbeddingBag)
# Decoder LLM settings by name, each on the fastest CPU kernel measured for its bits (``fxq bench --llm``); the
# LM head is a Linear, so it is quantized too. int8: Linears on fbgemm's dynamic kernel (int8 weights,
# activations quantized per call). int4: Linears group-wise 4-bit (group 128) on fxq's int4 kernel (or torch's
# where fxq's cannot be built). Embeddings take 8-bit rows in both: one 4-bit scale over a 2048-wide row costs more
# accuracy than all the int4 Linears of a layer (a 1-layer Llama's logits: 11.4 dB SQNR for 4-bit rows, 35.8
# for 8-bit), and a decode step reads one row per token, so the 4-bit table saves memory but no time.
PRESETS = {"int8": {nn.Linear: Dynamic(torch.qint8), nn.Embedding: WeightOnly(8)},
           "int4": {nn.Linear: WeightOnly(4, 128), nn.Embedding: WeightOnly(8)}}
_SUPPORTED = (nn.Linear, nn.LSTM, nn.GRU, nn.Embedding, nn.EmbeddingBag)


@dataclass
class DynamicReport:
    """What ``quantize_dynamic`` converted (counts per kind), what stayed float and why, and the sizes: bytes of
    ``torch.save(state_dict)`` for the model, and of the converted modules' weights as stored (scales and zero
    points included). Row-wise embeddings and weight-only linears hold exactly these bytes in memory too;
    prepacked kernels keep an extra packed copy, and a weight-only linear that no kernel runs expands one float
    weight per call."""

    converted: Counter = field(default_factory=Counter)
    left_float: list[tuple[str, str, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0

    @property
    def weight_ratio(self) -> float:
        """Bytes of the converted modules' weights after / before (scales and zero points included)."""
        return self.weight_bytes_after / self.weight_bytes_before if self.weight_bytes_before else float("nan")

    def __str__(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.converted.items()))
        weights = f"weights of converted modules {self.weight_bytes_before:,} -> {self.weight_bytes_after:,} bytes " \
                  f"({self.weight_ratio:.2f}x); " if kinds else ""
        lines = [f"converted {kinds or 'nothing'}; {weights}model {self.size_before:,} -> {self.size_after:,} bytes "
                 f"({self.size_after / max(self.size_before, 1):.2f}x)"]
        if any(kind.startswith(("DynamicLinear", "DynamicLSTM", "DynamicGRU")) for kind in self.converted):
            lines.append("  (sizes are what state_dict stores; in memory, prepacked Linear/LSTM/GRU kernels also hold "
                         "their own packed copy of the int8 weights)")
        lines += [f"  left float: {path} ({kind}): {why}" for path, kind, why in self.left_float]
        lines += [f"  matched no module: {key}" for key in self.unmatched]
        return "\n".join(lines)


def quantize_dynamic(model: nn.Module, qconfig_spec=None, dtype: torch.dtype = torch.qint8, *,
                     inplace: bool = False, calibration_data: Iterable | None = None) -> nn.Module:
    """A copy of ``model`` with the chosen submodules quantized (see the module docstring).

    Args:
        qconfig_spec: a set of module types (or names) to quantize with ``dtype``; or a dict from module type or
            module name (a name covers the module and everything inside it, and wins over types) to a config:
            ``Dynamic(dtype)``, ``WeightOnly(bits, group_size)``, a dtype, or None to keep it float; or "int8" /
            "int4", the decoder LLM settings (``PRESETS``). Default: ``{nn.Linear, nn.LSTM, nn.GRU}`` in
            ``dtype``, and for torch.qint8 ``nn.Embedding``/``nn.EmbeddingBag`` tables in 8-bit rows.
        dtype: for the set form: torch.qint8 (dynamic int8; embeddings 8-bit), torch.float16 (fp16 linear
            weights) or torch.quint4x2 (4-bit embedding tables).
        inplace: modify ``model`` itself instead of a copy.
        calibration_data: optional batches (tuples of forward arguments, or dicts of keyword arguments); with
            them, weight-only Linears are rounded by GPTQ (``fxq.gptq``) to the inputs each sees on the batches
            instead of to the nearest level. Other conversions do not use data.
    Returns:
        The quantized model; ``fxq.report_of(result)`` says what was converted, what stayed float, and sizes.
    Raises:
        ConfigError: a type fxq cannot quantize this way, a name the model does not have, or a bad dtype.
        CalibrationError: ``calibration_data`` given but empty, or giving non-finite inputs.
    """
    named_types = qconfig_spec is None or isinstance(qconfig_spec, str)  # types to try, not types to expect
    spec = _normalise(_preset(qconfig_spec, dtype) if named_types else qconfig_spec, dtype)
    _check_names(model, spec)
    result = model if inplace else copy.deepcopy(model)
    bake_parametrizations(result)  # a weight-normed Linear is an nn.Linear again, with the weight it computes
    report = DynamicReport(size_before=serialized_size(model))
    moments = _weight_only_moments(result, spec, calibration_data) if calibration_data is not None else {}
    matched = set()
    for path, module in list(result.named_modules()):
        key, config = _config_for(path, module, spec)
        matched.add(key)
        if config is None:
            continue
        replacement, why = _convert(module, config, input_moments=moments.get(path))
        if replacement is None:
            report.left_float.append((path, type(module).__name__, why))
            continue
        report.weight_bytes_before += _weight_bytes(module)
        report.weight_bytes_after += _weight_bytes(replacement)
        report.converted[_kind(replacement)] += 1
        _set(result, path, replacement)
    report.size_after = serialized_size(result)
    unmatched = sorted(key.__name__ for key in spec if isinstance(key, type) and key not in matched)
    report.unmatched = [] if named_types else unmatched
    if not report.converted and not report.left_float and any(config is not None for config in spec.values()):
        warnings.warn(f"quantize_dynamic converted nothing: the model has no {', '.join(unmatched)} "
                      f"(types are matched exactly; name modules in qconfig_spec to choose others)", FxqWarning,
                      stacklevel=2)
    if report.left_float:
        warnings.warn("quantize_dynamic left float: " + "; ".join(f"{p} ({why})" for p, _, why in report.left_float),
                      FxqWarning, stacklevel=2)
    setattr(result, REPORT_ATTRIBUTE, report)
    return result.eval() if not inplace else result


def _preset(name: str | None, dtype: torch.dtype) -> dict:
    if name is None:
        tables = {kind: WeightOnly(8) for kind in DEFAULT_TABLES} if dtype == torch.qint8 else {}
        return {**{kind: dtype for kind in DEFAULT_SPEC}, **tables}
    if name not in PRESETS:
        raise ConfigError(f"qconfig_spec={name!r}: the named settings are {', '.join(map(repr, PRESETS))}; or pass "
                          "a set or dict of module types and names")
    return PRESETS[name]


def _normalise(spec, dtype) -> dict[object, object]:
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, (set, frozenset, list, tuple)):
        items = ((key, dtype) for key in spec)
    else:
        raise ConfigError(f"qconfig_spec must be a set of module types/names or a dict, got {type(spec).__name__}")
    result = {}
    for key, value in items:
        if isinstance(key, type) and not issubclass(key, _SUPPORTED):
            names = ", ".join(t.__name__ for t in _SUPPORTED)
            raise ConfigError(f"quantize_dynamic cannot quantize {key.__name__}: dynamic and weight-only kernels "
                              f"exist for {names}. Use fxq.prepare/convert (static quantization) for it.")
        if not isinstance(key, (type, str)):
            raise ConfigError(f"qconfig_spec keys are module types or names, got {key!r}")
        result[key] = _as_config(value, key)
    return result


def _as_config(value, key):
    if value is None or isinstance(value, (Dynamic, WeightOnly)):
        return value
    if value in (torch.qint8, torch.float16):
        return Dynamic(value)
    if value == torch.quint4x2:
        return WeightOnly(bits=4)
    if value == torch.quint8:
        return WeightOnly(bits=8)
    raise ConfigError(f"qconfig_spec[{key!r}] = {value!r}: use torch.qint8, torch.float16, torch.quint4x2, "
                      "fxq.Dynamic(...), fxq.WeightOnly(...) or None")


def _check_names(model: nn.Module, spec: dict) -> None:
    names = {name for name, _ in model.named_modules()}
    unknown = [key for key in spec if isinstance(key, str) and key not in names]
    if unknown:
        raise ConfigError("qconfig_spec names modules the model does not have: "
                          + ", ".join(with_suggestion(name, names) for name in unknown))


def _config_for(path: str, module: nn.Module, spec: dict) -> tuple[object, object]:
    """(the spec key that decides ``path``, its config): the nearest named ancestor (or itself) first, then its
    type (a GPT-2 ``Conv1D`` is an ``nn.Linear``); (None, None) if none does."""
    probe = path
    supported = isinstance(module, _SUPPORTED) or is_transposed_linear(module)
    while True:
        if probe in spec:
            return probe, (spec[probe] if supported else None)
        if not probe:
            break
        probe = probe.rpartition(".")[0]
    kind = nn.Linear if is_transposed_linear(module) else type(module)
    return (kind, spec[kind]) if kind in spec else (None, None)


def _weight_only_moments(model: nn.Module, spec: dict, batches: Iterable) -> dict[str, torch.Tensor]:
    """Input moments of the Linears (and Conv1Ds) that ``spec`` makes weight-only, on ``batches``."""
    paths = [path for path, module in model.named_modules()
             if (isinstance(module, nn.Linear) or is_transposed_linear(module))
             and isinstance(_config_for(path, module, spec)[1], WeightOnly)]
    return linear_input_moments(model, paths, batches)


def _convert(module: nn.Module, config, quantize_weight=None,
             input_moments: torch.Tensor | None = None) -> tuple[nn.Module | None, str]:
    """The replacement for ``module`` under ``config``, or (None, why it stays float). ``quantize_weight`` turns
    a float weight into qint8 (default: ``_qint8_per_channel``; the graph path passes the qconfig's observer);
    ``input_moments`` makes a weight-only Linear round by GPTQ."""
    quantize_weight = quantize_weight or _qint8_per_channel
    if is_transposed_linear(module):
        module = as_linear(module)
    if isinstance(config, WeightOnly):
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return _guard(lambda: QuantizedEmbedding(module, config.bits))
        if isinstance(module, nn.Linear):
            return _guard(lambda: WeightOnlyLinear(module, config.bits, config.group_size, input_moments))
        return None, f"no weight-only form for {type(module).__name__} (Linear, Embedding and EmbeddingBag have one)"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        bits = 8 if config.dtype == torch.qint8 else None
        if bits is None:
            return None, "embeddings are quantized weight-only (qint8 -> 8-bit rows, quint4x2 -> 4-bit rows)"
        return _guard(lambda: QuantizedEmbedding(module, bits))
    relu = isinstance(module, FusedModule)
    layer = module[0] if relu else module
    if isinstance(layer, nn.Linear):
        if config.dtype == torch.float16:
            return DynamicLinear(layer.weight.detach().half(), layer.bias, relu), ""
        return DynamicLinear(quantize_weight(layer.weight), layer.bias, relu), ""
    if not isinstance(layer, (nn.LSTM, nn.GRU)):
        return None, f"no dynamic kernel for {type(layer).__name__} (Linear, LSTM and GRU have one)"
    if config.dtype != torch.qint8:
        return None, f"fxq's dynamic {type(module).__name__} is qint8 only (fp16 is available for Linear)"
    cls = DynamicLSTM if isinstance(module, nn.LSTM) else DynamicGRU
    return _guard(lambda: cls(module, quantize_weight))


def constant_linear_args(node) -> tuple | None:
    """(weight node, bias node or None) of a functional linear call whose weight and bias are constants
    (``get_attr``: an exported graph's Linear layers), which a dynamic module can run; None otherwise."""
    from torch.fx import Node

    if node.op != "call_function" or len(node.args) < 1:
        return None
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    constant = [isinstance(value, Node) and value.op == "get_attr" for value in (weight, bias)]
    if not constant[0] or not (bias is None or constant[1]):
        return None
    return weight, bias


def constant_embedding_args(node) -> tuple | None:
    """(table node, padding_idx or None) of an exported graph's ``aten.embedding`` call on a constant table
    (``get_attr``), which a weight-only embedding module can run; None otherwise."""
    from torch.fx import Node

    if node.op != "call_function" or node.target is not torch.ops.aten.embedding.default:
        return None
    table = node.args[0]
    padding = node.args[2] if len(node.args) > 2 else node.kwargs.get("padding_idx", -1)
    if not (isinstance(table, Node) and table.op == "get_attr") or not isinstance(padding, int):
        return None
    return table, (None if padding < 0 else padding)


def dynamic_module(module: nn.Module, dtype: torch.dtype, quantize_weight) -> tuple[nn.Module | None, str]:
    """The dynamic runtime module for a Linear (or fused Linear+ReLU), LSTM or GRU, or (None, why not): what
    ``lower`` uses for nodes with a dynamic qconfig."""
    return _convert(module, Dynamic(dtype), quantize_weight)


def _guard(make) -> tuple[nn.Module | None, str]:
    try:
        return make(), ""
    except (TypeError, ValueError) as err:
        return None, str(err)


def _qint8_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """The weight quantized with the default weight observer of the current engine's backend: per channel, in 7
    bits on x86/fbgemm (``fxq.qconfig.get_default_qconfig`` says why; on all-MiniLM-L6-v2 the mean cosine is
    0.977 with torch.ao's 7-bit activations instead, 0.9925 with 7-bit weights)."""
    engine = torch.backends.quantized.engine
    observer = default_weight(engine if engine in ("x86", "fbgemm", "qnnpack") else "reference")()
    observer(weight.detach().float())
    return quantize_with(observer, weight.detach().float())


def _weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's weights as stored (state_dict entries other than biases and running statistics)."""
    total = 0
    for key, value in module.state_dict().items():
        if isinstance(value, torch.Tensor) and "bias" not in key.rsplit(".", 1)[-1]:
            total += value.numel() * value.element_size()
    return total


def _kind(module: nn.Module) -> str:
    if isinstance(module, DynamicLinear):
        return f"DynamicLinear({'fp16' if module.fp16 else 'qint8'})"
    if isinstance(module, (QuantizedEmbedding, WeightOnlyLinear)):
        return f"{type(module).__name__}({module.bits}-bit)"
    return type(module).__name__


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise ConfigError("quantize_dynamic swaps submodules; the model itself is a single "
                          f"{type(root).__name__}: wrap it in an nn.Sequential")
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
