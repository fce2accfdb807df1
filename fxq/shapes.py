"""What each node's value is (a float tensor, an integer tensor, a tuple, a Python number), found by running
the example inputs through the graph once. Observers go only on float tensors; this is how passes know."""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from fxq.errors import TraceError


def propagate(gm: GraphModule, example_inputs: tuple) -> None:
    """Record ``tensor_meta`` (dtype, shape) on every node by running ``example_inputs`` once."""
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as err:
        raise TraceError(f"running the example inputs through the captured graph failed: {type(err).__name__}: "
                         f"{err}; check that example_inputs match the model's forward signature") from err


def is_float_tensor(value: object) -> bool:
    """True if ``value`` is a node whose recorded value is a single floating-point tensor."""
    if not isinstance(value, Node):
        return False
    meta = value.meta.get("tensor_meta")
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point


def float_tensors_in(value: object) -> bool:
    """True if ``value`` is a node whose recorded value is a tuple/list holding only float tensors."""
    if not isinstance(value, Node):
        return False
    meta = value.meta.get("tensor_meta")
    return (isinstance(meta, (tuple, list)) and len(meta) > 0
            and all(isinstance(m, TensorMetadata) and m.dtype.is_floating_point for m in meta))
