"""How long each layer takes in int8 and in float, in the model's own context, on this machine.

"int8 is slower than float" is common for small layers: the kernel saves arithmetic, but a conversion at each
boundary with a float neighbour costs a pass over memory, and a tiny GEMM has little arithmetic to save. So each
form is charged the conversions it needs next to the neighbours the int8 model gives it: the int8 form its
kernel, the quantizes feeding it (one shared by several layers counts for each in proportion) and the
dequantizes of its output; the float form its float op (from the prepared model), a dequantize of each int8
input and a quantize of its output when int8 ops read it. Everything runs on the values the example inputs
produce at that point of the graph (the model's own shapes), with the threads torch is set to use, the calls
interleaved (``fxq.timing``) and repeated until a timed call lasts long enough for the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.fx import GraphModule, Interpreter, Node
from torch.fx.node import map_arg

from fxq.annotation import info
from fxq.precision import TUNABLE_CONCEPTS
from fxq.timing import time_interleaved

SLOWER_MARGIN = 1.10  # int8 must be this much slower than float to keep a layer float: timing noise is ~5%
_CALL_SECONDS = 5e-4  # a timed call repeats the layer until it lasts about this long
_NOT_KERNELS = frozenset({"quantize", "dequantize", "layout", "float", None})


@dataclass(frozen=True)
class LayerTime:
    """A layer's median milliseconds per call, int8 (its conversions included) and float, with the threads torch
    used then."""

    int8_ms: float
    float_ms: float
    threads: int = field(default_factory=torch.get_num_threads)

    @property
    def int8_is_slower(self) -> bool:
        return self.int8_ms > self.float_ms * SLOWER_MARGIN

    def describe(self) -> str:
        return f"int8 {self.int8_ms:.4g} ms vs float {self.float_ms:.4g} ms with {self.threads} threads"


def tunable_layers(gm: GraphModule) -> dict[str, list[Node]]:
    """Module path -> the nodes of its conv/linear ops, in graph order: the layers a precision plan can name."""
    layers: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        record = info(node)
        if record.concept in TUNABLE_CONCEPTS and record.module_path:
            layers.setdefault(record.module_path, []).append(node)
    return layers


def measure_layer_times(prepared: GraphModule, converted: GraphModule, example_inputs: tuple,
                        rounds: int = 15, paths: Collection[str] | None = None) -> dict[str, LayerTime]:
    """int8 vs float time of every layer ``converted`` runs on an int8 kernel, or of those among ``paths``
    (``prepared`` is the calibrated model it was converted from; both are only read)."""
    float_values = node_values(prepared, example_inputs)
    int8_values = node_values(converted, example_inputs)
    float_layers = tunable_layers(prepared)
    times = {}
    for path, nodes in tunable_layers(converted).items():
        kernels = kernel_nodes(nodes)
        if not kernels or path not in float_layers or (paths is not None and path not in paths):
            continue
        owned = _with_conversions(kernels)
        int8_calls = [(run_alone(converted, node, int8_values), share) for node, share in owned.items()]
        float_calls = [(run_alone(prepared, node, float_values), 1.0) for node in float_layers[path]]
        float_calls += [(call, 1.0) for call in _float_conversions(kernels, owned, int8_values)]
        times[path] = LayerTime(*_time_against(int8_calls, float_calls, rounds))
    return times


def kernel_nodes(nodes: list[Node]) -> list[Node]:
    """The nodes of a layer that run an int8 kernel (after convert)."""
    return [node for node in nodes if info(node).lowered_to not in _NOT_KERNELS]


def _with_conversions(kernels: list[Node]) -> dict[Node, float]:
    """The layer's kernel nodes, the quantizes feeding them (weighted by their share) and their dequantizes."""
    owned: dict[Node, float] = {}
    for kernel in kernels:
        owned[kernel] = 1.0
        for source in map(_through_int8_moves, kernel.all_input_nodes):
            if info(source).lowered_to == "quantize":
                owned[source] = owned.get(source, 0.0) + 1.0 / len(source.users)
        for user in kernel.users:
            if info(user).lowered_to == "dequantize":
                owned[user] = 1.0
    return owned


def _through_int8_moves(node: Node) -> Node:
    """The first node up a chain of single-user int8 data moves (a slice, a flatten: ops run on the int8 tensor
    with its input's qparams, lowered to "int8 <op>") ending at ``node``."""
    while (info(node).lowered_to or "").startswith("int8 ") and len(node.users) == 1 and len(node.all_input_nodes) == 1:
        node = node.all_input_nodes[0]
    return node


def _float_conversions(kernels: list[Node], owned: dict[Node, float], values: dict[Node, object]) -> list:
    """What the float form adds between int8 neighbours: a dequantize per int8 input that is not the layer's own
    quantize, and a quantize of the output if int8 ops read it."""
    calls = []
    for kernel in kernels:
        for source in kernel.all_input_nodes:
            value = values[source]
            if _through_int8_moves(source) not in owned and isinstance(value, torch.Tensor) and value.is_quantized:
                calls.append(value.dequantize)
        out = values[kernel]
        if isinstance(out, torch.Tensor) and out.is_quantized and any(
                info(user).lowered_to != "dequantize" for user in kernel.users):
            calls.append(partial(torch.quantize_per_tensor, out.dequantize(), out.q_scale(), out.q_zero_point(),
                                 out.dtype))
    return calls


def node_values(gm: GraphModule, example_inputs: tuple) -> dict[Node, object]:
    """Every node's value on ``example_inputs``."""
    interpreter = Interpreter(gm, garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(*example_inputs)
    return interpreter.env


def run_alone(gm: GraphModule, node: Node, values: dict[Node, object]) -> Callable[[], object]:
    """Re-runs ``node`` alone on the values its inputs held."""
    args, kwargs = map_arg((node.args, node.kwargs), values.__getitem__)
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return lambda: module(*args, **kwargs)
    if node.op == "call_method":
        return lambda: getattr(args[0], node.target)(*args[1:], **kwargs)
    return lambda: node.target(*args, **kwargs)


def _time_against(int8_calls, float_calls, rounds: int) -> tuple[float, float]:
    """Each side's weighted sum of per-call medians (ms), all calls of both sides timed in the same rounds."""
    calls = {f"int8 {index}": call for index, (call, _) in enumerate(int8_calls)}
    calls.update({f"float {index}": call for index, (call, _) in enumerate(float_calls)})
    repeats = {name: _repeats(call) for name, call in calls.items()}
    timed = time_interleaved({name: _repeated(call, repeats[name]) for name, call in calls.items()},
                             rounds=rounds, warmup=1)
    per_call = {name: timed[name] / repeats[name] for name in calls}
    int8 = sum(share * per_call[f"int8 {index}"] for index, (_, share) in enumerate(int8_calls))
    return int8, sum(per_call[f"float {index}"] for index in range(len(float_calls)))


def _repeats(call: Callable[[], object]) -> int:
    with torch.no_grad():
        call()
        start = time.perf_counter()
        call()
        once = time.perf_counter() - start
    return max(1, min(2000, round(_CALL_SECONDS / max(once, 1e-7))))


def _repeated(call: Callable[[], object], times: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(times):
            call()
    return repeated
