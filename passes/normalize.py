"""normalize: name every node's op concept and rewrite in-place ops out of place.

Needs a traced graph. Afterwards every op node's annotation carries its ``concept`` ("relu", "add", ...), no
node uses an in-place form (``x.relu_()``, ``x += y``, ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``),
and later uses of a tensor an in-place op mutated read the op's result instead, so the numbers are unchanged.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
        for node in list(gm.graph.nodes):
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            record = info(node)
            record.concept = concept_of(node, modules)
            record.origin = node.name
            if is_inplace_form(node, modules):
                _make_out_of_place(node, modules)
                _redirect_later_uses(node, order)
                stamp(node, self.name, "out_of_place")
        return gm


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
