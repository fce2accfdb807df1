"""insert_observers: put an observer on every float tensor a quantized op reads or writes.

Needs qconfigs assigned (and ``ctx.example_inputs``, to learn which values are float tensors). Afterwards each
op that the backend can quantize and whose qconfig is not None has observers on its float tensor inputs and on
its output: its own (``qconfig.activation``) or the input's (ops such as maxpool that cannot widen the range), or
for average pools both, for ``lower`` to choose from. An op whose kernel can return float (the backend table's
``float_output``) gets no output observer when no op reads its output as int8 (only float ops, or the model's
output): it is marked ``FLOAT_OUTPUT`` instead.
Shared ops whose input is float stay float, and so do ops without weights whose inputs are all float and whose
output no int8 op reads (a rotary embedding's ``q * cos`` before float attention): int8 there only adds rounding.
Each tensor has one observer however many users it has, except that a reader whose activations have fewer levels
than that observer's (an int8 layer after an int16 one) reads it through one of its own, after that one, shared by
the readers with the same levels; integer/bool tensors and non-tensors are never observed. Ops left float say why
on their annotation.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import FLOAT_OUTPUT, info, leave_float
from fxq.backends import Observation, OpSupport, get_backend
from fxq.dynamic import constant_embedding_args, constant_linear_args
from fxq.graph_pass import GraphPass, PassContext
from fxq.index_arithmetic import index_arithmetic
from fxq.observers import Observer
from fxq.pass_registry import register_pass
from fxq.rewriter import Rewriter
from fxq.shapes import (
    EXTREME,
    VALUE_KEY,
    float_tensors_in,
    holds_extremes,
    holds_float_tensor,
    is_empty_tensor,
    is_float_tensor,
    propagate,
)

_OPS = ("call_module", "call_function", "call_method")
DYNAMIC_CONCEPTS = ("linear", "linear_relu", "lstm", "gru")


@register_pass
@dataclass(frozen=True)
class InsertObservers(GraphPass):
    """Insert activation observers as the backend table and each node's qconfig ask (see module docstring)."""

    name = "insert-observers"
    requires = frozenset({"qconfig_assigned"})
    provides = frozenset({"observed"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        if ctx.example_inputs:
            propagate(gm, ctx.example_inputs)
        _Placement(gm, get_backend(ctx.backend), Rewriter(gm, self.name)).run()
        return gm


class _Placement:
    """One walk over the graph in order; ``quantized`` maps each quantized value to its observer's name."""

    def __init__(self, gm: GraphModule, backend, rw: Rewriter) -> None:
        self.gm, self.backend, self.rw = gm, backend, rw
        self.quantized: dict[Node, str] = {}
        self.read_as_int8: dict[Node, bool] = {}

    def run(self) -> None:
        self.masks = mask_carriers(self.gm)
        self.indices = index_arithmetic(self.gm, self._weighted)
        for node in list(self.gm.graph.nodes):
            if node.op in _OPS and node not in self.quantized:
                self._place(node)

    def _place(self, node: Node) -> None:
        record = info(node)
        if record.qconfig is None:
            leave_float(node, "no qconfig applies to it")
            return
        if record.qconfig.is_dynamic:
            self._dynamic(node)
            return
        if record.qconfig.is_weight_only:
            self._weight_only(node)
            return
        reason = self._not_an_activation(node)
        if reason is not None:
            leave_float(node, reason)
            return
        support = self.backend.support(record.concept)
        if support is None:
            what = record.concept or _describe_target(node)
            leave_float(node, f"backend {self.backend.name!r} has no quantized form of {what}")
            return
        if support.weighted and record.qconfig.weight is None:
            leave_float(node, "its qconfig has no weight observer")
            return
        if support.observation is not Observation.OWN:
            self._share(node, narrowing=support.observation is Observation.NARROWING)
            return
        if not is_float_tensor(node):
            leave_float(node, "its output is not a float tensor")
            return
        inputs = _activation_inputs(node, support)
        if not support.weighted and not any(map(self._has_int8_form, inputs)) and not self._read_as_int8(node):
            leave_float(node, "its inputs are float and no int8 op reads its output: int8 here would only add "
                              "rounding (and a quantize and a dequantize)")
            return
        for index, arg in enumerate(inputs):
            self._observe_input(node, index, arg)
        if support.float_output and not self._read_as_int8(node):
            record.precision = FLOAT_OUTPUT
            return
        self._observe_output(node, self._add_observer(node, record.qconfig.activation()))

    def _not_an_activation(self, node: Node) -> str | None:
        """Why ``node`` computes values that int8 must not round (masks, indices) or has none, if it does."""
        if node in self.masks or any(arg in self.masks for arg in node.all_input_nodes):
            return (f"it carries values of magnitude >= {EXTREME:g} (an additive mask built from a huge constant such "
                    "as finfo.min?): an int8 range covering them would leave every other value in one step")
        if node in self.indices:
            return ("its values become integers (a cast such as .long() reads them: positions or indices computed "
                    "in float), which int8 rounding would shift by one")
        if any(is_empty_tensor(value) for value in (node, *node.all_input_nodes)):
            return ("it reads or makes a tensor with no elements (a slice past the end, such as the unrotated part "
                    "of a fully rotary attention): there are no values to observe")
        return None

    def _has_int8_form(self, value: Node) -> bool:
        """Whether ``value`` is already observed (an int8 op makes it, or an int8 reader quantizes it)."""
        return value in self.quantized or any(user in self.quantized for user in value.users)

    def _weighted(self, node: Node) -> bool:
        support = self.backend.support(info(node).concept)
        return support is not None and support.weighted

    def _read_as_int8(self, node: Node) -> bool:
        """Whether some reader of ``node``'s output will take it quantized: an op with its own quantized form, or a
        shared one (reshape, maxpool...) whose output is read quantized in turn. Readers come later in the walk,
        so this looks ahead with what ``_place`` will decide for them."""
        if node not in self.read_as_int8:
            self.read_as_int8[node] = any(self._reads_int8(user) for user in node.users)
        return self.read_as_int8[node]

    def _reads_int8(self, reader: Node) -> bool:
        record = info(reader)
        if reader.op not in _OPS or record.qconfig is None or record.qconfig.is_dynamic \
                or self._not_an_activation(reader) is not None:
            return False
        support = self.backend.support(record.concept)
        if support is None:
            return False
        return support.observation is Observation.OWN or self._read_as_int8(reader)

    def _dynamic(self, node: Node) -> None:
        """Dynamic ops quantize their input at run time: nothing to observe; ``lower`` swaps the module."""
        record = info(node)
        if record.concept in DYNAMIC_CONCEPTS and (node.op == "call_module" or (
                record.concept == "linear" and constant_linear_args(node) is not None)):
            record.precision = f"dynamic {str(record.qconfig.dynamic_dtype).replace('torch.', '')}"
        else:
            what = record.concept or _describe_target(node)
            leave_float(node, f"no dynamic kernel for {what}: dynamic quantization covers Linear (with a fused "
                              "ReLU), LSTM and GRU modules, and linear calls with constant weights")

    def _weight_only(self, node: Node) -> None:
        """Weight-only ops keep float activations: nothing to observe; ``lower`` stores the table in rows."""
        record = info(node)
        if record.concept in ("embedding", "embedding_bag") and (
                node.op == "call_module" or constant_embedding_args(node) is not None):
            record.precision = f"weight-only {record.qconfig.weight_only_bits}-bit rows"
        else:
            what = record.concept or _describe_target(node)
            leave_float(node, f"no weight-only form for {what}: weight-only quantization in prepare/convert covers "
                              "embedding tables (nn.Embedding and nn.EmbeddingBag modules, and an exported "
                              "graph's embedding calls on a constant table); fxq.quantize_dynamic has weight-only "
                              "Linears")

    def _share(self, node: Node, narrowing: bool) -> None:
        """The output reuses the input's observer; a narrowing op's output also gets its own, recorded next to
        the input's (role "input0"), and ``lower`` picks one of the two from what calibration saw."""
        source = node.args[0] if node.args else None
        observer = self.quantized.get(source) if isinstance(source, Node) else None
        if not holds_float_tensor(source):
            leave_float(node, "it does not operate on a float tensor")
        elif observer is None:
            leave_float(node, "its input is float, so it runs in float too")
        elif is_float_tensor(node) and narrowing:
            info(node).observers["input0"] = observer
            self._observe_output(node, self._add_observer(node, info(node).qconfig.activation()))
        elif is_float_tensor(node):
            self._observe_output(node, observer)
        elif float_tensors_in(node):
            self.quantized[node] = observer  # a tuple of quantized tensors: each getitem re-observes
            info(node).observers["output"] = observer
        else:
            leave_float(node, "its output is not a float tensor")

    def _add_observer(self, node: Node, observer: nn.Module, stem: str | None = None) -> str:
        if not isinstance(observer, Observer):
            raise TypeError(f"qconfig of {node.name} made a {type(observer).__name__}, not an fxq Observer")
        name = self.rw.unique_name(stem or f"obs_{node.name}")
        observer.node_name = node.name
        self.gm.add_submodule(name, observer)
        self.rw.modules[name] = observer
        return name

    def _observe_output(self, node: Node, observer: str) -> None:
        call = self.rw.insert("call_module", observer, (node,), after=node, like=node)
        call.meta[VALUE_KEY] = node.meta.get(VALUE_KEY)
        node.replace_all_uses_with(call, delete_user_cb=lambda user: user is not call)
        self.quantized[call] = observer
        info(node).observers["output"] = observer

    def _observe_input(self, consumer: Node, index: int, value: Node) -> None:
        """The consumer reads the value's observer, or one it adds; or, where the value's observer keeps more
        levels than the consumer's activations have (``_narrower``), one of its own read after that one."""
        own = info(consumer).qconfig.activation()
        existing = value if value in self.quantized else next((u for u in value.users if u in self.quantized), None)
        if existing is None:
            existing = self._insert_input_observer(consumer, value, self._add_observer(value, own))
        elif _narrower(own, self.rw.modules[self.quantized[existing]]):
            source = existing
            existing = next((u for u in source.users if u in self.quantized
                             and _same_levels(own, self.rw.modules[self.quantized[u]])), None)
            if existing is None:  # named for the reader: the value has an observer already
                observer = self._add_observer(source.args[0], own, stem=f"obs_{consumer.name}_input{index}")
                existing = self._insert_input_observer(consumer, source, observer)
        if existing is not value:
            consumer.replace_input_with(value, existing)
        info(consumer).observers[f"input{index}"] = self.quantized[existing]

    def _insert_input_observer(self, consumer: Node, value: Node, observer: str) -> Node:
        call = self.rw.insert("call_module", observer, (value,), after=value, like=consumer)
        call.meta[VALUE_KEY] = value.meta.get(VALUE_KEY)
        self.quantized[call] = observer
        return call


def _levels(observer) -> tuple:
    return (observer.dtype, getattr(observer, "quant_min", None), getattr(observer, "quant_max", None),
            getattr(observer, "symmetric", None))


def _same_levels(own, existing) -> bool:
    """Whether two activation observers quantize to the same levels: dtype, range and scheme."""
    return _levels(own) == _levels(existing)


def _narrower(own, existing) -> bool:
    """Whether a consumer whose activation observer is ``own`` must not read a value through ``existing``: its
    levels differ and it has fewer of them (an int8 layer after an int16 one), so reading the value as
    ``existing`` quantized it would simulate the consumer's input at a precision it does not have. The other way
    (an int16 layer after an int8 one) the value already has the coarser levels, and stays as it is; so do
    observers with as many levels (8-bit with other dtypes or schemes)."""
    if _same_levels(own, existing):
        return False
    count = [getattr(o, "quant_max", 0) - getattr(o, "quant_min", 0) + 1 for o in (own, existing)]
    return count[0] < count[1]


# A literal this large in forward is a mask fill (-10000.0 in BERT's original code and many since): an int8 range
# covering it leaves ordinary scores (|s| < 40) in one step. Recorded values need EXTREME (1e6) to count, since
# a uniform input in the thousands quantizes fine.
MASK_CONSTANT = 1e4


def mask_carriers(gm: GraphModule) -> set[Node]:
    """Nodes whose values come from a float mask constant (|c| >= MASK_CONSTANT, e.g. ``(1 - mask) * finfo.min``
    or the classic ``* -10000.0``; integer arguments are sizes and slice ends, such as export's ``slice(x, 0, 0,
    2**63 - 1)``, not values) or held extreme values on the example inputs, and every op computed from them, up
    to a softmax (whose output is a probability again). Seeding from constants catches masks whose example inputs
    had no padding."""
    carriers: set[Node] = set()
    for node in gm.graph.nodes:
        if node.op not in _OPS:
            continue
        huge_constant = any(isinstance(v, float) and abs(v) >= MASK_CONSTANT for v in _flat_args(node))
        from_carrier = not _absorbs_masks(node) and any(arg in carriers for arg in node.all_input_nodes)
        if huge_constant or from_carrier or holds_extremes(node):
            carriers.add(node)
    return carriers


def _absorbs_masks(node: Node) -> bool:
    """Softmax and attention turn masked scores back into ordinary values."""
    return info(node).concept in ("softmax", "attention")


def _flat_args(node: Node) -> list:
    flat = []
    for value in (*node.args, *node.kwargs.values()):
        flat.extend(value if isinstance(value, (list, tuple)) else (value,))
    return flat


def _activation_inputs(node: Node, support: OpSupport) -> list[Node]:
    """The float tensor nodes among the op's inputs, except a functional weighted op's weight and bias and any
    parameter or constant (a ``get_attr``, such as an exported layer norm's weight): those are not activations."""
    args = list(node.args)
    if support.weight_arg is not None and node.op == "call_function":
        args = args[: support.weight_arg]
    found: list[Node] = []
    for arg in args:
        for item in arg if isinstance(arg, (list, tuple)) else (arg,):
            if is_float_tensor(item) and item.op != "get_attr" and item not in found:
                found.append(item)
    return found


def _describe_target(node: Node) -> str:
    target = node.target
    if node.op == "call_module":
        return f"module {target!r}"
    return getattr(target, "__name__", str(target))
