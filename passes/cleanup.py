"""cleanup: remove what a lowered graph no longer needs.

Needs a lowered graph. Afterwards there is no ``quantize(dequantize(q))`` that re-quantizes a tensor with the
qparams it already has, no identity module or eval-mode dropout, and no dead node or unused submodule.
The model computes exactly what it computed before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.rewriter import Rewriter, drop_unused_submodules

_NO_OP_CONCEPTS = ("identity", "dropout")


def _is_quantize(node: object) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target is torch.quantize_per_tensor


def _is_dequantize(node: object) -> bool:
    return isinstance(node, Node) and node.op == "call_method" and node.target == "dequantize"


def _same_qparams(a: Node, b: Node) -> bool:
    return tuple(a.args[1:4]) == tuple(b.args[1:4])


@register_pass
@dataclass(frozen=True)
class Cleanup(GraphPass):
    """Drop no-op modules, redundant requantization and dead code."""

    name = "cleanup"
    requires = frozenset({"lowered"})
    provides = frozenset({"cleaned"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        rw = Rewriter(gm, self.name)
        for node in list(gm.graph.nodes):
            if _is_no_op(node, rw.modules):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        for node in list(gm.graph.nodes):
            source = node.args[0] if _is_quantize(node) else None
            if _is_dequantize(source) and _is_quantize(source.args[0]) and _same_qparams(node, source.args[0]):
                node.replace_all_uses_with(source.args[0])
                rw.stamp(source.args[0])
                gm.graph.erase_node(node)
        gm.graph.eliminate_dead_code()
        drop_unused_submodules(gm)
        return gm


def _is_no_op(node: Node, modules: dict) -> bool:
    if info(node).concept not in _NO_OP_CONCEPTS or not node.args or not isinstance(node.args[0], Node):
        return False
    if node.op == "call_module":
        return not modules[node.target].training
    training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)  # F.dropout's default
    return training is False
