"""Clear errors for a converted model called with the wrong inputs, at no cost when the inputs are right.

A converted model's forward is a hot path, so nothing is checked before it runs. ``ConvertedGraphModule``
(``fxq.converted``) only catches what the forward raises; ``diagnose`` then compares the actual inputs with what the example inputs given to
``fxq.prepare`` held (dtype, rank, example shape) and with the device of the model's weights, and, if any input
differs, re-runs the graph under ``torch.fx.Interpreter`` to find the node that fails and what it expects. The
result is an ``InputError`` chained to the original exception; an error the inputs do not explain is re-raised
unchanged.

Wrong dtypes are not checked up front: every wrong dtype tried (float64/16, bfloat16, integers, quantized
tensors) raises in the first quantize or kernel instead of giving a wrong answer, and a check on the recorded
dtype would refuse inputs that work (an int64 mask recorded as float32).
"""

from __future__ import annotations

import inspect
import itertools

import torch
from torch.fx import GraphModule, Interpreter, Node

from fxq.annotation import META_KEY
from fxq.errors import InputError
from fxq.shapes import VALUE_KEY, TensorInfo

INPUTS_ATTR = "_fxq_inputs"
_FIX = ("call the model with inputs like the example inputs given to fxq.prepare (dimensions the ops do not fix, "
        "such as the batch, may vary)")


def input_records(gm: GraphModule) -> tuple[tuple[str, TensorInfo | None], ...]:
    """(forward argument name, what the example inputs held there) per placeholder of a prepared graph."""
    return tuple((str(node.target), node.meta.get(VALUE_KEY)) for node in gm.graph.nodes if node.op == "placeholder")


def recorded_inputs(gm: GraphModule) -> tuple[tuple[str, TensorInfo | None], ...]:
    """What ``guard`` remembered for ``gm`` (kept on the module: node records do not survive pickling)."""
    return getattr(gm, INPUTS_ATTR, ())


def diagnose(gm: GraphModule, args: tuple, kwargs: dict, err: Exception) -> InputError | None:
    """The InputError explaining ``err`` by how the inputs differ from the recorded ones, or None if they do not."""
    signature = inspect.signature(gm.forward)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as bind_error:
        return InputError(f"the quantized model takes forward{signature}, but was called with {len(args)} "
                          f"positional and {len(kwargs)} keyword argument(s) ({bind_error}); pass the arguments "
                          "the example inputs given to fxq.prepare held")
    bound.apply_defaults()
    records, device = recorded_inputs(gm), _device_of(gm)
    values = [bound.arguments.get(name) for name, _ in records]
    problems = [problem for (name, record), value in zip(records, values, strict=True)
                if name in bound.arguments and (problem := _mismatch(name, record, value, device))]
    if not problems:
        return None
    shape_only = all(kind == "shape" for kind, _ in problems)
    return InputError("; ".join(text for _, text in problems) + _failure(gm, values, err, shape_only))


def _device_of(gm: GraphModule) -> torch.device:
    """Where the model's weights live (quantized kernels run on the CPU)."""
    tensor = next(itertools.chain(gm.parameters(), gm.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _mismatch(name: str, record: TensorInfo | None, value, device: torch.device) -> tuple[str, str] | None:
    """(kind, how input ``name`` differs from the example input recorded for it, with the fix), or None. The
    kind is "shape" for a rank or size that differs, when what the failing node expects is worth adding."""
    if not isinstance(record, TensorInfo):
        return None
    expected = f"a {_dtype(record.dtype)} tensor of shape {tuple(record.shape)}"
    if not isinstance(value, torch.Tensor):
        return "type", f"input {name!r} is {_short(value)}, where the example inputs had {expected}"
    if value.device != device:
        return "device", (f"input {name!r} is on device {value.device}, but the quantized model's weights and "
                          f"kernels are on {device}: move it there with .to({str(device)!r})")
    if value.dtype != record.dtype:
        return "dtype", (f"input {name!r} is {_dtype(value.dtype)}, where the example inputs had {expected}: "
                         f"convert it with .to({record.dtype})")
    if value.dim() != len(record.shape):
        return "shape", (f"input {name!r} has {value.dim()} dimension(s) (shape {tuple(value.shape)}), where the "
                         f"example inputs had {len(record.shape)} (shape {tuple(record.shape)})")
    if tuple(value.shape) != tuple(record.shape):
        return "shape", (f"input {name!r} has shape {tuple(value.shape)}, where the example inputs had "
                         f"{tuple(record.shape)}")
    return None


def _failure(gm: GraphModule, values: list, err: Exception, with_expectation: bool) -> str:
    """Where the graph fails on these inputs (re-run node by node), what that node expects, and the fix."""
    node = _failing_node(gm, values)
    cause = f"{type(err).__name__}: {first_sentence(err)}"
    if node is None:
        return f" ({cause}); {_FIX}"
    expectation = _expectation(gm, node) if with_expectation else ""
    return f". It fails at {_describe(gm, node)}{expectation} ({cause}); {_FIX}"


def first_sentence(err: Exception) -> str:
    """The first sentence of an exception's message: kernels append paragraphs of advice the chained original
    keeps anyway."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else "(no message)"
    end = text.find(". ")
    return text[:end + 1] if end > 0 else text


class _Locator(Interpreter):
    """An Interpreter that remembers the node it is running, so a failure can be pinned on it."""

    current: Node | None = None

    def run_node(self, n: Node):
        self.current = n
        return super().run_node(n)


def _failing_node(gm: GraphModule, values: list) -> Node | None:
    locator = _Locator(gm)
    try:
        with torch.no_grad():
            locator.run(*values)
    except Exception:
        return locator.current
    return None


def _describe(gm: GraphModule, node: Node) -> str:
    """``node 'fc' (module 'fc', QuantizedLinear)``: the node, the module it came from and what it runs."""
    record = node.meta.get(META_KEY)
    path = getattr(record, "module_path", None)
    origin = f"module {path!r}, " if path else ""
    if node.op == "call_module":
        what = type(gm.get_submodule(str(node.target))).__name__
    else:
        what = getattr(node.target, "__name__", str(node.target))
    details = f"{origin}{what}" if what != node.name else origin.rstrip(", ")
    return f"node {node.name!r}" + (f" ({details})" if details else "")


def _expectation(gm: GraphModule, node: Node) -> str:
    """What the failing module needs of its input, when its weight says so."""
    if node.op != "call_module":
        return ""
    module = gm.get_submodule(str(node.target))
    features = _first_attribute(module, "in_features")
    if features is None and getattr(module, "fxq_concept", None) == "linear" and hasattr(module, "qweight"):
        features = module.qweight.shape[1]
    if features is not None:
        return f", which expects {features} features in the last dimension"
    channels = _first_attribute(module, "in_channels")
    if channels is None and str(getattr(module, "fxq_concept", "")).startswith("conv") and hasattr(module, "qweight"):
        weight = module.qweight
        channels = weight.shape[0] if module.transposed else weight.shape[1] * module.groups
    if channels is not None:
        return f", which expects {channels} channels in dimension 1"
    return ""


def _first_attribute(module: torch.nn.Module, name: str):
    """``name`` on ``module`` or its first submodule that has it (a reference module wraps the float one)."""
    return next((getattr(m, name) for m in module.modules() if isinstance(getattr(m, name, None), int)), None)


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _short(value) -> str:
    """A value's type, and the value itself when it is a plain scalar (other reprs may hold addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return f"{type(value).__name__} {value!r}"[:60]
    return f"a {type(value).__name__}"
