"""record_input_statistics: watch the float input of every quantized conv/linear with a ``ChannelStatistics``.

Needs an observed graph (it follows ``insert-observers``, whose annotations say which layers are quantized).
Afterwards each weighted op that will be quantized (it has observers, or a dynamic int8 precision) reads its
activation through a ``ChannelStatistics`` module (placed after the input observer, which returns its input
unchanged) recorded in ``info(node).statistics["input0"]``. Calibration fills them; a convert-side pass such as
``bias-correction`` reads them and removes them before ``lower``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.backends import get_backend
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.rewriter import Rewriter
from fxq.shapes import VALUE_KEY
from fxq.statistics import ChannelStatistics

NAME = "record-input-statistics"
_OPS = ("call_module", "call_function", "call_method")
# The channel axis of each weighted op's input, counted from the end so batched and unbatched inputs agree.
CHANNEL_AXIS = {"linear": -1, "linear_relu": -1,
                "conv1d": -2, "conv1d_relu": -2, "conv_transpose1d": -2,
                "conv2d": -3, "conv2d_relu": -3, "conv_transpose2d": -3,
                "conv3d": -4, "conv3d_relu": -4, "conv_transpose3d": -4}


def quantized_layer(node: Node, backend) -> bool:
    """A conv/linear whose weight ``lower`` will quantize: statically (it has observers) or dynamically to int8."""
    record = info(node)
    if node.op not in _OPS or record.concept not in CHANNEL_AXIS:
        return False
    support = backend.support(record.concept)
    return (support is not None and support.weighted
            and (bool(record.observers) or record.precision == "dynamic qint8"))


def activation_input(node: Node) -> Node | None:
    """The value a conv/linear call reads (its first argument in every spelling: module, functional, aten)."""
    value = node.args[0] if node.args else node.kwargs.get("input")
    return value if isinstance(value, Node) else None


@register_pass
@dataclass(frozen=True)
class RecordInputStatistics(GraphPass):
    """Insert a ChannelStatistics module on the input of every quantized conv/linear (see the module docstring)."""

    name = NAME
    requires = frozenset({"observed"})
    provides = frozenset({"input_statistics"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        backend = get_backend(ctx.backend)
        rw = Rewriter(gm, self.name)
        for node in list(gm.graph.nodes):
            value = activation_input(node) if quantized_layer(node, backend) else None
            if value is None:
                continue
            name = rw.unique_name(f"stats_{node.name}")
            module = ChannelStatistics(CHANNEL_AXIS[info(node).concept])
            module.node_name = node.name
            gm.add_submodule(name, module)
            rw.modules[name] = module
            call = rw.insert("call_module", name, (value,), before=node, like=node)
            call.meta[VALUE_KEY] = value.meta.get(VALUE_KEY)
            node.replace_input_with(value, call)
            info(node).statistics["input0"] = name
        return gm
