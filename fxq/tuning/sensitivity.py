"""How much error each layer adds in int8 by itself: its int8 kernel run on the float model's own input values
(quantized as the int8 model quantizes them), compared with its float output.

``fxq.compare`` measures what reaches each layer through the whole int8 model and estimates a layer's own share
by subtraction, which is noisy where errors from upstream dominate (a layer then looks free). Feeding each kernel
clean inputs measures its own error directly, for every layer, in one pass over the float and the int8 graphs:
the ranking ``fxq.tune`` moves layers up the precision ladder by.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.observers import Observer
from fxq.tuning.layer_times import kernel_nodes, node_values, run_alone, tunable_layers


def layer_sensitivity(prepared: GraphModule, converted: GraphModule, batches: list[tuple],
                      paths: Collection[str] | None = None) -> dict[str, float]:
    """Path -> SQNR (dB) of each int8 layer's output (of those among ``paths``) given exact inputs, over
    ``batches``; inf if exact."""
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    layers = {path: kernel_nodes(nodes) for path, nodes in tunable_layers(converted).items()
              if paths is None or path in paths}
    for batch in batches:
        clean = _by_origin(prepared, node_values(prepared, batch))
        values = node_values(converted, batch)
        for path, kernels in layers.items():
            for kernel in kernels:
                expected = clean.get(_origin(kernel))
                got = _forced(converted, kernel, values, clean)
                if expected is None or got is None or got.shape != expected.shape:
                    continue
                signal[path] = signal.get(path, 0.0) + float(expected.double().square().sum())
                noise[path] = noise.get(path, 0.0) + float((expected.double() - got.double()).square().sum())
    return {path: _db(signal[path], noise[path]) for path in signal}


def _forced(converted: GraphModule, kernel: Node, values: dict[Node, object], clean: dict[str, torch.Tensor]):
    """The kernel's output (as float) with each input replaced by the float model's value of it, quantized
    as the int8 model had it; None if an input has no float counterpart."""
    replaced: dict[Node, object] = {}
    for source in kernel.all_input_nodes:
        origin_node = source
        while isinstance(origin_node, Node) and info(origin_node).lowered_to in ("quantize", "dequantize"):
            origin_node = origin_node.args[0]
        value, exact = values[source], clean.get(_origin(origin_node)) if isinstance(origin_node, Node) else None
        if not isinstance(value, torch.Tensor):
            replaced[source] = value
            continue
        if exact is None or exact.shape != value.shape:
            return None
        replaced[source] = (torch.quantize_per_tensor(exact, value.q_scale(), value.q_zero_point(), value.dtype)
                            if value.is_quantized else exact)
    with torch.no_grad():
        out = run_alone(converted, kernel, {**values, **replaced})()
    if not isinstance(out, torch.Tensor):
        return None
    return out.dequantize() if out.is_quantized else out


def _by_origin(prepared: GraphModule, values: dict[Node, object]) -> dict[str, torch.Tensor]:
    """origin -> the float value of the op computing it (not its observer)."""
    result: dict[str, torch.Tensor] = {}
    modules = dict(prepared.named_modules())
    for node, value in values.items():
        origin = _origin(node)
        observer = node.op == "call_module" and isinstance(modules.get(node.target), Observer)
        if not observer and isinstance(value, torch.Tensor) and origin not in result:
            result[origin] = value
    return result


def _origin(node: Node) -> str:
    """The traced node a node computes; the inputs, which no pass rewrites, are their own."""
    return info(node).origin or node.name


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf

