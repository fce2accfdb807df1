"""The numeric comparison: how far each layer of a quantized model is from the same layer of the float model,
on the same data, worst layer first.

Layers are matched through the node annotations, not names: every node records the traced node whose value it
computes (``NodeInfo.origin``; a fused conv+bn+relu computes the relu's value, a kernel the op's it replaced),
and the float model is traced the way ``prepare`` traced it, so its node names are those origins. A value whose
one reader clamps it is quantized as the clamp sees it (``observe-clamped``) and compared with the float value
clamped the same way.

Per-tensor numbers can hide a crushed channel: when one channel is much larger than the rest it dominates both
the signal and the scale, so the tensor's SQNR looks fine while the other channels keep a few steps each. The
worst channel's SQNR is reported too (channels: dim 1 of 4-d/5-d values, the last dim otherwise).

Error accumulates: a layer after a bad one looks bad too. Besides each value's SQNR against the float value,
the comparison estimates the error a layer adds itself: its output's noise-to-signal ratio minus the worst of
its inputs' (SQNR is roughly kept through a layer, so the difference is what the layer contributed). Layers
are sorted by that ``own_sqnr_db``, lowest first, so the layer that costs accuracy comes first.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from fxq.annotation import info
from fxq.capture import capture
from fxq.errors import ConfigError
from fxq.tracing import TRACE_OPTIONS_KEY


@dataclass(frozen=True)
class LayerError:
    """One matched layer: where it is, what it became, and how far its output is from the float one."""

    origin: str
    node: str
    concept: str | None
    module_path: str
    status: str
    sqnr_db: float
    own_sqnr_db: float
    max_abs_error: float
    cosine: float
    worst_channel_sqnr_db: float = math.inf


@dataclass
class Comparison:
    """Matched layers, worst first (lowest ``own_sqnr_db``), and the float nodes no quantized node computes."""

    layers: list[LayerError]
    unmatched: list[str] = field(default_factory=list)

    def worst(self) -> LayerError:
        return self.layers[0]

    def __str__(self) -> str:
        from fxq.dump.text import fit_table

        cells = [[layer.node, layer.concept or "", layer.status, _db(layer.own_sqnr_db), _db(layer.sqnr_db),
                  _db(layer.worst_channel_sqnr_db), f"{layer.max_abs_error:.3g}", f"{layer.cosine:.5f}"]
                 for layer in self.layers]
        return fit_table(["node", "op", "became", "own SQNR dB", "SQNR dB", "worst channel dB", "max abs err",
                          "cosine"], cells, 120)


def compare(float_model: nn.Module, quantized: GraphModule, data: Iterable) -> Comparison:
    """Per-layer SQNR, max abs error and cosine of ``quantized`` against ``float_model`` over ``data``.

    Args:
        float_model: the model that was quantized (not modified: a copy is traced).
        quantized: what ``fxq.convert`` (or ``fxq.quantize``) returned.
        data: batches; each a tuple of forward arguments (a lone tensor is wrapped).
    Raises:
        ConfigError: ``quantized`` does not come from fxq, or no batch was given, or no layer matched.
    """
    if not isinstance(quantized, GraphModule) or TRACE_OPTIONS_KEY not in quantized.meta:
        raise ConfigError("compare() takes a model returned by fxq.convert/fxq.quantize (its nodes say which "
                          f"float layer they compute); got {type(quantized).__name__}")
    batches = [batch if isinstance(batch, tuple) else (batch,) for batch in data]
    if not batches:
        raise ConfigError("compare() got no data; pass an iterable of input batches")
    options = dict(quantized.meta[TRACE_OPTIONS_KEY])
    how = options.pop("how", "fx")
    if how == "export":
        options = {}
    floating = capture(copy.deepcopy(float_model).eval(), batches[0], how, **options).graph_module
    readers = _quantized_readers(quantized)
    clamps = _clamped_values(quantized, readers)
    stats: dict[str, _Stats] = {}
    with torch.no_grad():
        for batch in batches:
            expected = _values(floating, batch, None)
            got = _values(quantized, batch, readers)
            for origin, node_name in readers.items():
                if origin in expected and node_name in got:
                    want = expected[origin] if origin not in clamps else expected[origin].clamp(*clamps[origin])
                    stats.setdefault(origin, _Stats()).add(want, got[node_name])
    if not stats:
        raise ConfigError("no quantized node matched a float layer; was the float model the one quantized?")
    return _rank(floating, quantized, readers, stats)


def _quantized_readers(quantized: GraphModule) -> dict[str, str]:
    """origin -> the node whose value stands for it: the op, or the quantize after it (what later ops read)."""
    readers: dict[str, str] = {}
    for node in quantized.graph.nodes:
        record = info(node)
        if record.origin is None or record.lowered_to in ("quantize", "dequantize", "layout"):
            continue
        after = next((user for user in node.users if _is_quantize(user)), None)
        readers[record.origin] = (_last_quantize(after) if after is not None else node).name
    return readers


def _clamped_values(quantized: GraphModule, readers: dict[str, str]) -> dict[str, tuple[float, float]]:
    """origin -> bounds, for values quantized as the clamp that reads them sees them (``observe-clamped``): the
    levels hold only what survives the clamp, so the float value is compared clamped too."""
    nodes = {node.name: node for node in quantized.graph.nodes}
    clamps = {}
    for origin, name in readers.items():
        bounds = info(_op_of(nodes[name], origin)).qparams.get("output", {}).get("clamped_to")
        if bounds is not None:
            clamps[origin] = tuple(bounds)
    return clamps


def _is_quantize(node: Node) -> bool:
    return info(node).lowered_to == "quantize"


def _last_quantize(node: Node) -> Node:
    """The end of a chain of quantize steps each read only by the next: an int16 activation's clamp to its 16-bit
    levels is marked "quantize" too, and stands for nothing until the ``quantize_per_tensor`` after it rounds."""
    while len(node.users) == 1 and _is_quantize(next(iter(node.users))):
        node = next(iter(node.users))
    return node


def _op_of(node: Node, origin: str) -> Node:
    """The op a reader stands for: itself, or the op before its chain of quantize steps."""
    while info(node).origin != origin and _is_quantize(node) and node.args and isinstance(node.args[0], Node):
        node = node.args[0]
    return node


def _values(gm: GraphModule, batch: tuple, keep: dict[str, str] | None) -> dict[str, torch.Tensor]:
    wanted = set(keep.values()) if keep is not None else None
    seen: dict[str, torch.Tensor] = {}

    class Recorder(Interpreter):
        def run_node(self, node: Node):
            result = super().run_node(node)
            if isinstance(result, torch.Tensor) and (wanted is None or node.name in wanted):
                # a copy: a later in-place op of the float model (ReLU6(inplace=True)) would change it
                seen[node.name] = result.dequantize() if result.is_quantized else result.clone()
            return result

    Recorder(gm).run(*batch)
    return seen


class _Stats:
    """Running sums over batches: signal, noise (also per channel), max abs error, dot products for the cosine."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.power = 0.0
        self.max_abs = 0.0
        self.channel_signal: torch.Tensor | None = None
        self.channel_noise: torch.Tensor | None = None

    def add(self, expected: torch.Tensor, got: torch.Tensor) -> None:
        if expected.shape != got.shape or not expected.is_floating_point():
            return
        expected, got = expected.double(), got.double()
        error = expected - got
        self.signal += float(expected.square().sum())
        self.noise += float(error.square().sum())
        self.dot += float((expected * got).sum())
        self.power += float(got.square().sum())
        self.max_abs = max(self.max_abs, float(error.abs().max()) if error.numel() else 0.0)
        if expected.dim() >= 2:
            dim = 1 if expected.dim() >= 4 else expected.dim() - 1
            others = [d for d in range(expected.dim()) if d != dim]
            signal, noise = expected.square().sum(others), error.square().sum(others)
            if self.channel_signal is None or self.channel_signal.shape != signal.shape:
                self.channel_signal, self.channel_noise = signal, noise
            else:
                self.channel_signal, self.channel_noise = self.channel_signal + signal, self.channel_noise + noise

    @property
    def ratio(self) -> float:
        return self.noise / self.signal if self.signal > 0 else (0.0 if self.noise == 0 else math.inf)

    @property
    def worst_channel_ratio(self) -> float:
        """The largest noise-to-signal ratio of a channel that carries signal."""
        if self.channel_signal is None:
            return self.ratio
        live = self.channel_signal > 0
        if not bool(live.any()):
            return self.ratio
        return float((self.channel_noise[live] / self.channel_signal[live]).max())


def _rank(floating: GraphModule, quantized: GraphModule, readers: dict[str, str],
          stats: dict[str, _Stats]) -> Comparison:
    by_name = {node.name: node for node in quantized.graph.nodes}
    inherited = _input_ratios(floating, stats)
    layers = []
    for origin, stat in stats.items():
        node = by_name[readers[origin]]
        op = _op_of(node, origin)  # the quantize after an op stands for it
        record = info(op)
        own = max(stat.ratio - inherited.get(origin, 0.0), 0.0)
        layers.append(LayerError(
            origin=origin, node=op.name, concept=record.concept, module_path=record.module_path,
            status=record.lowered_to or "", sqnr_db=_to_db(stat.ratio), own_sqnr_db=_to_db(own),
            max_abs_error=stat.max_abs, worst_channel_sqnr_db=_to_db(stat.worst_channel_ratio),
            cosine=stat.dot / math.sqrt(stat.signal * stat.power) if stat.signal and stat.power else 1.0))
    layers.sort(key=lambda layer: (layer.own_sqnr_db, layer.sqnr_db))
    unmatched = [n.name for n in floating.graph.nodes
                 if n.op in ("call_module", "call_function", "call_method") and n.name not in stats]
    return Comparison(layers, unmatched)


def _input_ratios(floating: GraphModule, stats: dict[str, _Stats]) -> dict[str, float]:
    """For each matched layer, the worst noise ratio among the nearest matched layers feeding it."""
    feeding: dict[str, float] = {}  # node name -> worst ratio of what reaches it (through unmatched nodes)
    result: dict[str, float] = {}
    for node in floating.graph.nodes:
        worst = 0.0
        for source in node.all_input_nodes:
            if source.name in stats:
                worst = max(worst, stats[source.name].ratio)
            else:
                worst = max(worst, feeding.get(source.name, 0.0))
        feeding[node.name] = worst
        if node.name in stats:
            result[node.name] = worst
    return result


def _to_db(ratio: float) -> float:
    if ratio <= 0:
        return math.inf
    return -10 * math.log10(ratio) if math.isfinite(ratio) else -math.inf


def _db(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.1f}"
