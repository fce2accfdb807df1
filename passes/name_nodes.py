"""name-nodes: give the nodes that passes created names that follow the user's code.

Rewrites replace nodes one at a time, and torch.fx never hands out a name twice in a graph, so a rewritten graph
reads in no particular order (the first block's fused ops become ``add_relu_3``, the second block's
``add_relu_2``). Afterwards: inputs, outputs, attributes, module calls and the traced nodes themselves keep
their names; a node that still computes a traced op's value with the same kind of op (a kernel for ``sigmoid``)
takes that op's name; every other node created by a pass is numbered in graph order by its kind
(``add_relu``, ``add_relu_1``, ...). So the names of one model are the same at every stage and run in the order
of its forward. The graph computes exactly what it computed before.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass

_SUFFIX = re.compile(r"_\d+$")
_KEEP_OPS = ("placeholder", "output", "get_attr", "call_module")


@register_pass
@dataclass(frozen=True)
class NameNodes(GraphPass):
    """Rename pass-created nodes after the ops they replace, else by kind in graph order."""

    name = "name-nodes"
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        names = planned_names(list(gm.graph.nodes))
        if all(node.name == name for node, name in names.items()):
            return gm
        for node, name in names.items():
            node.name = name
        gm.graph = copy.deepcopy(gm.graph)  # a fresh graph namespace that knows exactly these names
        return gm


def planned_names(nodes: list[Node]) -> dict[Node, str]:
    """Each node's new name (unique; the unchanged ones included)."""
    kept = [node for node in nodes if node.op in _KEEP_OPS or node.name == info(node).origin]
    taken = {node.name for node in kept}
    names = {node: node.name for node in kept}
    rest = [node for node in nodes if node not in names]
    for node in rest:  # first, the ops that still compute a traced op's value take its name
        origin = info(node).origin
        if origin and origin not in taken and _stem(origin) == _stem(node.name):
            names[node] = origin
            taken.add(origin)
    counters: dict[str, int] = {}
    for node in rest:  # then the others, numbered in graph order by their kind
        if node in names:
            continue
        stem = _stem(node.name)
        index = counters.get(stem, 0)
        while (candidate := stem if index == 0 else f"{stem}_{index}") in taken:
            index += 1
        counters[stem] = index + 1
        names[node] = candidate
        taken.add(candidate)
    return names


def _stem(name: str) -> str:
    return _SUFFIX.sub("", name)
