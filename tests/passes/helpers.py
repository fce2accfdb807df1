"""Small helpers shared by the per-pass tests: trace, run one pass, list the graph's op nodes."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.annotation import info
from fxq.graph_pass import PassContext, add_properties
from fxq.pass_registry import get_pass
from fxq.tracing import trace


def traced(model: nn.Module) -> GraphModule:
    """Trace a copy: passes rewrite the GraphModule's submodules in place, and those are the traced model's own."""
    gm = trace(copy.deepcopy(model).eval()).graph_module
    add_properties(gm, frozenset({"traced"}))
    return gm


def run(gm: GraphModule, *names: str, ctx: PassContext | None = None) -> GraphModule:
    ctx = ctx or PassContext()
    for name in names:
        gm = get_pass(name)().run(gm, ctx)
        gm.graph.lint()
        gm.recompile()
        add_properties(gm, get_pass(name).provides)
    return gm


def op_nodes(gm: GraphModule) -> list[tuple[str, str, object]]:
    """(op, concept, target-or-module-type) for every op node, in order."""
    modules = dict(gm.named_modules())
    rows = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            rows.append((node.op, info(node).concept, type(modules[node.target])))
        elif node.op in ("call_function", "call_method"):
            rows.append((node.op, info(node).concept, node.target))
    return rows


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return torch.allclose(a, b, rtol=tol, atol=tol)
