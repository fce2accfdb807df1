"""What each node's value is (a float tensor, an integer tensor, a tuple, a Python number), found by running
the example inputs through the graph once. Observers go only on float tensors; this is how passes know.

The record is deliberately small (dtype and shape): torch's ShapeProp also computes strides, memory formats and
qparams for every value, which made it ten times slower than running the graph on big graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Interpreter, Node

from fxq.errors import TraceError, first_line

VALUE_KEY = "fxq_value"


# Values this large are not activations but masks (``finfo.min`` added to attention scores): an int8 range that
# covered them would leave every real value in a single step.
EXTREME = 1e6


@dataclass(frozen=True)
class TensorInfo:
    """The dtype and shape a node's tensor had on the example inputs, and whether it held extreme values
    (magnitude >= ``EXTREME`` or not finite)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    extreme: bool = False


def propagate(gm: GraphModule, example_inputs: tuple) -> None:
    """Record a ``TensorInfo`` (or a tuple of them, or None) on every node by running ``example_inputs`` once."""
    for node, value in _run(gm, example_inputs).items():
        node.meta[VALUE_KEY] = value


def record_values(gm: GraphModule, example_inputs: tuple) -> dict[str, object]:
    """Node name -> what ``propagate`` would record, without writing anything on the graph (for tools that
    describe a model they must not change)."""
    return {node.name: value for node, value in _run(gm, example_inputs).items()}


def _run(gm: GraphModule, example_inputs: tuple) -> dict[Node, object]:
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*example_inputs)
    except Exception as err:
        at = f" at node {recorder.current.name!r}" if recorder.current is not None else ""
        raise TraceError(f"running the example inputs through the captured graph failed{at}: "
                         f"{type(err).__name__}: {first_line(err)}; check that example_inputs match the model's forward "
                         "signature and shapes") from err
    return recorder.seen


def value_of(node: Node):
    """What ``propagate`` recorded for ``node``: a TensorInfo, a tuple of them (None for non-tensors), or None."""
    return node.meta.get(VALUE_KEY)


def is_float_tensor(value: object) -> bool:
    """True if ``value`` is a node whose recorded value is a single floating-point tensor."""
    if not isinstance(value, Node):
        return False
    meta = value.meta.get(VALUE_KEY)
    return isinstance(meta, TensorInfo) and meta.dtype.is_floating_point


def is_empty_tensor(value: object) -> bool:
    """True if ``value`` is a node whose recorded tensor had no elements (a slice past the end)."""
    meta = value.meta.get(VALUE_KEY) if isinstance(value, Node) else None
    return isinstance(meta, TensorInfo) and 0 in meta.shape


def holds_extremes(value: object) -> bool:
    """True if ``value`` is a node whose recorded tensor held values of magnitude >= EXTREME (or Inf/NaN)."""
    meta = value.meta.get(VALUE_KEY) if isinstance(value, Node) else None
    return isinstance(meta, TensorInfo) and meta.extreme


def float_tensors_in(value: object) -> bool:
    """True if ``value`` is a node whose recorded value is a tuple/list holding only float tensors."""
    if not isinstance(value, Node):
        return False
    meta = value.meta.get(VALUE_KEY)
    return (isinstance(meta, tuple) and len(meta) > 0
            and all(isinstance(m, TensorInfo) and m.dtype.is_floating_point for m in meta))


def holds_float_tensor(value: object) -> bool:
    """True if ``value`` (a node, or what ``propagate`` recorded) is or holds, at any depth, a float tensor: an
    LSTM's (output, (h, c)) does."""
    meta = value.meta.get(VALUE_KEY) if isinstance(value, Node) else value
    if isinstance(meta, TensorInfo):
        return meta.dtype.is_floating_point
    return isinstance(meta, (tuple, list)) and any(holds_float_tensor(item) for item in meta)


class _Recorder(Interpreter):
    def __init__(self, gm: GraphModule) -> None:
        super().__init__(gm)
        self.seen: dict[Node, object] = {}
        self.current: Node | None = None

    def run_node(self, node: Node):
        self.current = node
        result = super().run_node(node)
        self.seen[node] = _describe(result)
        return result


def _describe(value: object):
    if isinstance(value, torch.Tensor):
        extreme = (value.is_floating_point() and not value.is_quantized and value.numel() > 0
                   and not bool((value.abs() < EXTREME).all()))
        return TensorInfo(value.dtype, tuple(value.shape), extreme)
    if isinstance(value, (tuple, list)):
        return tuple(_describe(item) if isinstance(item, torch.Tensor) else None for item in value)
    return None
