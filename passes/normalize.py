"""normalize: name every node's op concept, give each call of a module its own module, make in-place ops out of
place.

Needs a traced graph. Afterwards every op node's annotation carries its ``concept`` ("relu", "add", ...); a
module fxq knows (a conv, a linear, a ReLU...) that forward calls several times is one module per call site,
the copies sharing its parameters and buffers, so later passes can fuse, observe and lower each call on its own
(each has its own input and output ranges); no node uses an in-place form (``x.relu_()``, ``x += y``,
``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``), and later uses of a tensor an in-place op mutated read
the op's result instead; ``F.interpolate``'s whole-number scale factors are floats (TorchScript takes no other).
The numbers are unchanged.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info, stamp
from fxq.graph_pass import GraphPass, PassContext
from fxq.ops import concept_of, is_inplace_form
from fxq.pass_registry import register_pass

# In-place function -> its out-of-place twin (method forms just drop the trailing underscore).
OUT_OF_PLACE = {
    operator.iadd: operator.add,  # x += y
    operator.imul: operator.mul,  # x *= y
    F.relu_: F.relu,
    torch.relu_: torch.relu,
    torch.sigmoid_: torch.sigmoid,
    torch.tanh_: torch.tanh,
    torch.clamp_: torch.clamp,
    F.hardtanh_: F.hardtanh,
    F.leaky_relu_: F.leaky_relu,
}


@register_pass
@dataclass(frozen=True)
class Normalize(GraphPass):
    """Annotate op concepts and make every op out of place."""

    name = "normalize"
    requires = frozenset({"traced"})
    provides = frozenset({"normalized"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        modules = dict(gm.named_modules())
        order = {node: index for index, node in enumerate(gm.graph.nodes)}
        called: set[str] = set()
        for node in list(gm.graph.nodes):
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            record = info(node)
            record.concept = concept_of(node, modules)
            record.origin = node.name
            if node.op == "call_module" and record.concept is not None:
                if node.target in called:
                    _call_own_copy(gm, node, modules)
                    stamp(node, self.name, "own_module_per_call")
                called.add(node.target)
            if is_inplace_form(node, modules):
                _make_out_of_place(node, modules)
                _redirect_later_uses(node, order)
                stamp(node, self.name, "out_of_place")
            if record.concept == "interpolate" and _float_scale_factor(node):
                stamp(node, self.name, "float_scale_factor")
        return gm


def _float_scale_factor(node: Node) -> bool:
    """Spell an ``F.interpolate`` call's whole-number scale factor as a float (the same resize): TorchScript's
    signature takes floats only, and ``interpolate(x, scale_factor=2)`` kept a U-Net off the TorchScript runtime."""
    if node.target is not F.interpolate:
        return False
    positional = len(node.args) > 2
    factor = node.args[2] if positional else node.kwargs.get("scale_factor")
    if isinstance(factor, int) and not isinstance(factor, bool):
        floats = float(factor)
    elif isinstance(factor, (tuple, list)) and any(isinstance(f, int) for f in factor):
        floats = type(factor)(float(f) for f in factor)
    else:
        return False
    if positional:
        node.update_arg(2, floats)
    else:
        node.update_kwarg("scale_factor", floats)
    return True


def _call_own_copy(gm: GraphModule, node: Node, modules: dict) -> None:
    """Point ``node`` at a copy of the module it calls, registered beside it (``fc`` -> ``fc_call2``).

    The copy shares the module's parameters and buffers (tied weights stay tied; nothing is duplicated until a
    pass replaces a weight), while its own attribute dictionaries let passes swap or fold it for this call
    alone. The node keeps the original ``module_path``, so QConfigMapping rules naming the module still apply.
    """
    parent, _, leaf = node.target.rpartition(".")
    count = 2
    while f"{node.target}_call{count}" in modules:
        count += 1
    name = f"{leaf}_call{count}"
    clone = _sharing_copy(modules[node.target])
    (gm.get_submodule(parent) if parent else gm).add_module(name, clone)
    node.target = f"{parent}.{name}" if parent else name
    modules[node.target] = clone


def _sharing_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers are the very same tensors, with dictionaries of its own."""
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {name: None if child is None else _sharing_copy(child) for name, child in module._modules.items()}
    return clone


def _make_out_of_place(node: Node, modules: dict) -> None:
    if node.op == "call_module":
        modules[node.target].inplace = False
    elif node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__"):
        node.target = node.target[:-1]
    elif node.op == "call_function" and node.target in OUT_OF_PLACE:
        node.target = OUT_OF_PLACE[node.target]
    if node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}


def _redirect_later_uses(node: Node, order: dict[Node, int]) -> None:
    """An in-place op changed its first argument; users after it saw the changed value, so give them ours."""
    mutated = node.args[0] if node.args else None
    if not isinstance(mutated, Node):
        return
    for user in list(mutated.users):
        if user is not node and order.get(user, -1) > order[node]:
            user.replace_input_with(mutated, node)
