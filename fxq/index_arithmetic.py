"""Float arithmetic whose result becomes an integer: positions and indices computed in float and then cast.

OPT computes its position ids as ``(cumsum(mask, 1) * mask - 1).long()``. An int8 step of 0.03 over a range of
16 is harmless to an activation, but the cast truncates 4.97 to 4: every position moves by one and the
positional embedding reads the wrong rows (a tiny random OPT: 4.5 dB SQNR with that ``mul`` in int8). Values
like these are counts, not activations, and must stay exact, so ``insert-observers`` leaves this arithmetic
float.

A sink is an op whose value is an integer tensor of the same shape as one of its float inputs (a cast, a
bucketize): elementwise, each float value became an integer. From its float inputs the walk goes back through
the ops that computed them, up to (not including) ops with weights, which compute activations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from fxq.shapes import TensorInfo, is_float_tensor, value_of

_OPS = ("call_module", "call_function", "call_method")
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def index_arithmetic(gm: GraphModule, computes_activations: Callable[[Node], bool]) -> set[Node]:
    """The float-valued op nodes whose values reach an elementwise cast to integers through ops for which
    ``computes_activations`` is False (it stops the walk: weighted ops). Needs ``fxq.shapes.propagate``'s
    records."""
    pending = [arg for node in gm.graph.nodes if node.op in _OPS for arg in _cast_inputs(node)]
    found: set[Node] = set()
    while pending:
        node = pending.pop()
        if node in found or node.op not in _OPS or computes_activations(node):
            continue
        found.add(node)
        pending.extend(arg for arg in node.all_input_nodes if is_float_tensor(arg))
    return found


def _cast_inputs(node: Node) -> list[Node]:
    """The float inputs of ``node`` that it turns, element by element, into an integer tensor."""
    value = value_of(node)
    if not isinstance(value, TensorInfo) or value.dtype not in _INTEGERS:
        return []
    return [arg for arg in node.all_input_nodes
            if is_float_tensor(arg) and value_of(arg).shape == value.shape]
