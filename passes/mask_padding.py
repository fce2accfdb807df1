"""mask_padding: calibrate activations on real tokens only, when the model takes a padding mask.

A padded batch computes values at its padding positions too. They never reach a real token's output (attention
masks them), but an observer that records them can widen its range for nothing. This pass finds the input that
is the padding mask (a 2-d integer or bool input holding only 0 and 1 on the example inputs, from which the
graph builds an attention mask: the ``attn_mask`` of an attention op, or an additive mask built from a huge
constant), computes ``valid = mask != 0`` once, and hands it to every observer of a value laid out as
(batch, tokens, ...) with the mask's shape, which then records only the valid positions. Needs an observed
graph with recorded example values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fxq.passes.insert_observers import mask_carriers
from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.graph_pass import GraphPass, PassContext
from fxq.observers import Observer
from fxq.pass_registry import register_pass
from fxq.rewriter import Rewriter
from fxq.shapes import TensorInfo, value_of

NAME = "mask-padding"


@register_pass
@dataclass(frozen=True)
class MaskPadding(GraphPass):
    """Observers of (batch, tokens, ...) values record real tokens only (see the module docstring)."""

    name = NAME
    requires = frozenset({"observed"})
    provides = frozenset({"padding_masked"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        mask = _padding_mask(gm, ctx.example_inputs)
        if mask is None:
            return gm
        shape = value_of(mask).shape
        rw = Rewriter(gm, self.name)
        valid = None
        for node in list(gm.graph.nodes):
            value = value_of(node.args[0]) if node.args and isinstance(node.args[0], Node) else None
            if not (node.op == "call_module" and isinstance(rw.modules.get(node.target), Observer)
                    and isinstance(value, TensorInfo) and len(value.shape) > len(shape)
                    and tuple(value.shape[:len(shape)]) == tuple(shape)):
                continue
            if valid is None:
                last_input = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
                valid = rw.insert("call_function", torch.ne, (mask, 0), after=last_input, like=mask)
                info(valid).lowered_to = "float"
                ctx.notes.append(f"observers record real tokens only: input {mask.name!r} is the padding mask")
            node.args = (node.args[0], valid)
            rw.stamp(node)
        return gm


def _padding_mask(gm: GraphModule, example_inputs: tuple) -> Node | None:
    """The placeholder that is the padding mask, or None: 2-d, integer or bool, only 0/1 on the example inputs,
    and an ancestor of an attention op's mask or of an additive mask."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    targets = set(mask_carriers(gm))
    for node in gm.graph.nodes:
        if info(node).concept == "attention":
            attn_mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
            if isinstance(attn_mask, Node):
                targets.add(attn_mask)
    feeding = _ancestors(targets)
    for node, example in zip(placeholders, example_inputs, strict=False):
        if (node in feeding and isinstance(example, torch.Tensor) and example.dim() == 2
                and not example.is_floating_point() and bool(((example == 0) | (example == 1)).all())):
            return node
    return None


def _ancestors(nodes: set[Node]) -> set[Node]:
    seen, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.all_input_nodes)
    return seen
