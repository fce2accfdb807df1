"""The constant bounds of a clamping op (relu, relu6, hardtanh, clamp), whatever its spelling.

``observe-clamped`` (prepare) observes a value after the clamp that is its only reader, and ``lower`` drops a
clamp whose int8 input cannot hold a value outside the bounds; both read the bounds here.
"""

from __future__ import annotations

import math
import numbers

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fxq.annotation import info
from fxq.ops import aten_name

_FIXED = {"relu": (0.0, math.inf), "relu6": (0.0, 6.0)}
# hardtanh's spellings: the names of its bound arguments (after the input) and their defaults
_HARDTANH_ARGS = (("min_val", -1.0), ("max_val", 1.0))
_CLAMP_ARGS = (("min", None), ("max", None))


def clamp_bounds(node: Node, modules: dict[str, nn.Module]) -> tuple[float, float] | None:
    """(low, high) the op clamps its input to (an open side is -inf / inf), or None when it is no clamp or a
    bound is not a constant number (a tensor)."""
    concept = info(node).concept
    if concept in _FIXED:
        return _FIXED[concept]
    if concept != "hardtanh":
        return None
    if node.op == "call_module":
        module = modules.get(node.target)
        return (float(module.min_val), float(module.max_val)) if isinstance(module, nn.Hardtanh) else None
    hardtanh = node.target is F.hardtanh or aten_name(node.target) == "aten.hardtanh"
    spec = _HARDTANH_ARGS if hardtanh else _CLAMP_ARGS
    bounds = []
    for index, (name, default) in enumerate(spec, start=1):
        value = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
        if value is None:
            value = -math.inf if index == 1 else math.inf
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        bounds.append(float(value))
    return bounds[0], bounds[1]
