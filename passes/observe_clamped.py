"""observe_clamped: observe a value through the clamp that is its only reader.

A relu6 (or relu, hardtanh(0, hi), clamp(0, hi)) runs on its input's int8 tensor with its input's qparams, so
one observer serves both and, left alone, records the unclamped values: a conv+BN output before ReLU6 spans
[-20, 15] where only [0, 6] survives, and its 256 levels are spread over all of it. When the clamp is the value's
only reader, nothing downstream can tell a value outside the bounds from the bound itself, so the observer
records the values clamped (``Observer.clamp_to``): the same 256 levels cover only what survives (MobileNetV2:
the block outputs' steps 2-5x finer), and the producing kernel's int8 output, which saturates at the ends of
its levels, already computes the clamp, so ``lower`` drops it (one op less per block).

Only where that saturation is exact: a clamp whose low bound is 0 after an op with an affine observer over its
dtype's full range (the zero point then lands on level 0, and the highest level on at most the observed maximum).
Narrower ranges (4-bit activations, reduce_range) keep their levels and the clamp. Each clamp observed so says
so in its history. Quantization-aware training places observers the same way: ``fake-quantize`` wraps the
clamped observer, whose first range is searched on the clamped values (zero point 0); a learned scale that grows
past the clamp's bound keeps the clamp at convert (``lower`` checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from fxq.annotation import stamp
from fxq.clamp_bounds import clamp_bounds
from fxq.graph_pass import GraphPass, PassContext
from fxq.observers.base import Observer
from fxq.observers.fixed import FixedQParamsObserver
from fxq.observers.placeholder import PlaceholderObserver
from fxq.pass_registry import register_pass
from fxq.qparams import qrange

NAME = "observe-clamped"
_EIGHT_BIT = (torch.quint8, torch.qint8)


@register_pass
@dataclass(frozen=True)
class ObserveClamped(GraphPass):
    """Observe values through the clamp that is their only reader (see the module docstring)."""

    name = NAME
    requires = frozenset({"observed"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            bounds = clamp_bounds(node, modules) if node.op != "placeholder" else None
            if bounds is None or bounds[0] != 0.0 or not node.args:
                continue
            observer = _own_observer_read_only_by(gm, node, node.args[0], modules)
            if observer is None:
                continue
            observer.clamp_to = bounds
            producer = node.args[0].args[0]
            stamp(node, self.name, f"{producer.name}'s observer records its values clamped to [0, {bounds[1]:g}]: "
                                   "this clamp is their only reader, and the int8 output saturates there")
        return gm


def _own_observer_read_only_by(gm: GraphModule, clamp: Node, value: Node, modules: dict) -> Observer | None:
    """The observer of ``value`` (an observer call) when it is of a kind that records ranges over its dtype's
    full levels, the clamp is the observed value's only reader, and every other value it observes comes after
    the clamp (ops that share its qparams downstream), none before."""
    if not isinstance(value, Node) or value.op != "call_module" or not value.args:
        return None
    observer = modules.get(value.target)
    producer = value.args[0]
    if type(observer).forward is not Observer.forward or isinstance(observer, (FixedQParamsObserver,
                                                                             PlaceholderObserver)):
        return None  # a fake quantizer (its own forward), or qparams that do not come from a range
    if observer.per_channel or observer.symmetric or observer.clamp_to is not None:
        return None
    if observer.dtype not in _EIGHT_BIT or (observer.quant_min, observer.quant_max) != qrange(observer.dtype):
        return None
    if not isinstance(producer, Node) or list(producer.users) != [value] or list(value.users) != [clamp]:
        return None
    others = [n for n in gm.graph.find_nodes(op="call_module", target=value.target) if n is not value]
    if not all(_after(site, clamp, value) for site in others):
        return None  # the observer also watches values before this one (a flatten sharing a conv's qparams)
    return observer


def _after(site: Node, clamp: Node, first: Node) -> bool:
    """Whether the chain of first inputs from observer call ``site`` back to ``first`` passes through ``clamp``
    (ops that share an observer read it as their first input)."""
    node = site
    while isinstance(node, Node) and node is not first and node.args:
        if node is clamp:
            return True
        node = node.args[0]
    return False
