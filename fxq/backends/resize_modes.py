"""Which resizes torch can run on an int8 tensor: nearest, nearest-exact and area in 2-d and 3-d, bilinear in
2-d. Bicubic, linear and trilinear have no int8 kernel, nor does antialiasing; those stay float islands.

Traced graphs name the mode in an argument of ``F.interpolate`` or in the ``nn.Upsample`` module; exported
graphs spell each mode as its own aten op, and only the supported ones are forms of the ``interpolate`` concept.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fxq.shapes import TensorInfo, value_of

_INT8_MODES = {4: {"nearest", "nearest-exact", "bilinear", "area"}, 5: {"nearest", "nearest-exact", "area"}}


def no_int8_resize(node: Node, modules: dict[str, nn.Module]) -> str | None:
    """Why the resize ``node`` cannot run on an int8 tensor, or None if it can."""
    if node.op == "call_module":
        mode, antialias = modules[node.target].mode, False
    elif node.target is F.interpolate:
        mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
        antialias = node.kwargs.get("antialias", node.args[6] if len(node.args) > 6 else False)
    else:
        return None  # an aten form: the concept lists only the supported ones
    value = value_of(node)
    rank = len(value.shape) if isinstance(value, TensorInfo) else None
    if antialias:
        return f"{node.name} resizes with antialiasing, which has no int8 kernel"
    if mode not in _INT8_MODES.get(rank, ()):
        return f"{node.name} resizes {rank}-d values in mode {mode!r}, which has no int8 kernel"
    return None
