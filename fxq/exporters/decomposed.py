"""A converted model rewritten for exporters: plain float tensors only, with quantization as explicit ops.

Native graphs pass quantized tensors between int8 kernels (prepacked conv/linear modules, ``quantized.add``...);
no exporter can trace those. ``decompose`` rewrites a copy into what the kernels compute, written in float:

* every quantized value becomes ``dequantize(quantize(v))`` of its float value with its scale and zero point
  (``fxq::quantize`` / ``fxq::dequantize``), which is the value the int8 tensor holds;
* an int8 kernel becomes its float op (``quantized.add(a, b, s, z)`` -> ``a + b``), followed by that pair;
* an int8 weight is kept as int8 values with their scales and dequantized in the graph
  (``fxq::dequantize_per_channel``), so files hold 8-bit weights.

The result is the same math as the kernels up to their rounding of intermediate sums. Each exporter maps the three
``fxq::`` ops: ONNX to QuantizeLinear / DequantizeLinear (a "QDQ" model), pt2 to aten arithmetic (``ATEN``), so
files load without fxq. Reference graphs take the same path: their quantize/dequantize pairs become the ops above.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.fx import GraphModule, Interpreter, Node

from fxq.converted import ConvertedGraphModule
from fxq.errors import ConfigError
from fxq.nn.quantized import QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput
from fxq.nn.quantized.embedding import QuantizedEmbedding
from fxq.nn.quantized.group_norm import group_norm
from fxq.nn.reference import WeightQuantized
from fxq.observers import Observer
from fxq.runtime import example_inputs_of

_INT_DTYPES = {torch.quint8: torch.uint8, torch.qint8: torch.int8, torch.qint32: torch.int32}


def _quantize(x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    info = torch.iinfo(dtype)
    return torch.clamp(torch.round(x / scale) + zero_point, info.min, info.max).to(dtype)


def _dequantize(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return (q.to(torch.float32) - zero_point) * scale


def _dequantize_per_channel(q: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                            axis: int) -> torch.Tensor:
    shape = [1] * q.dim()
    shape[axis] = -1
    return (q.to(torch.float32) - zero_points.reshape(shape).to(torch.float32)) * scales.reshape(shape)


# Custom ops rather than plain functions: torch.export keeps them as single nodes, which exporters map to their
# own quantize/dequantize operators. (torch's quantized_decomposed ops would do, but they live in torch.ao.)
for _name, _math, _fake in (
        ("quantize", _quantize, lambda x, scale, zero_point, dtype: torch.empty_like(x, dtype=dtype)),
        ("dequantize", _dequantize, lambda q, scale, zero_point: torch.empty_like(q, dtype=torch.float32)),
        ("dequantize_per_channel", _dequantize_per_channel,
         lambda q, scales, zero_points, axis: torch.empty_like(q, dtype=torch.float32))):
    torch.library.custom_op(f"fxq::{_name}", _math, mutates_args=()).register_fake(_fake)
quantize = torch.ops.fxq.quantize.default
dequantize = torch.ops.fxq.dequantize.default
dequantize_per_channel = torch.ops.fxq.dequantize_per_channel.default

# The fxq ops in aten arithmetic, for ``ExportedProgram.run_decompositions``.
ATEN = {quantize: _quantize, dequantize: _dequantize, dequantize_per_channel: _dequantize_per_channel}


class Int8Weight(nn.Module):
    """A quantized weight kept as int8 values and scales; calling it returns the dequantized float weight."""

    def __init__(self, qweight: torch.Tensor) -> None:
        super().__init__()
        if qweight.dtype not in (torch.qint8, torch.quint8):
            raise ConfigError(f"the exporters take 8-bit weights only, got one of dtype {qweight.dtype}")
        self.register_buffer("values", qweight.int_repr())
        self.per_channel = qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        if self.per_channel:
            self.axis = qweight.q_per_channel_axis()
            self.register_buffer("scales", qweight.q_per_channel_scales().float())
            self.register_buffer("zero_points", qweight.q_per_channel_zero_points().to(self.values.dtype))
        else:
            self.scale, self.zero_point = qweight.q_scale(), qweight.q_zero_point()

    def forward(self) -> torch.Tensor:
        if self.per_channel:
            return dequantize_per_channel(self.values, self.scales, self.zero_points, self.axis)
        return dequantize(self.values, self.scale, self.zero_point)


class DequantizedWeight(nn.Module):
    """A float module (``nn.Linear``, a conv, a fused ``conv -> relu``) run with an ``Int8Weight``."""

    def __init__(self, module: nn.Module, qweight: torch.Tensor, weight_name: str = "weight") -> None:
        super().__init__()
        self.module, self.weight_name, self.weight = module, weight_name, Int8Weight(qweight)

    def forward(self, *args, **kwargs):
        return functional_call(self.module, {self.weight_name: self.weight()}, args, kwargs)


class DequantizedEmbedding(nn.Module):
    """A ``QuantizedEmbedding`` for exporters: its uint8 levels and per-row scales and offsets, the table
    computed from them in the graph and looked up in float (the row-wise kernels' values, up to rounding)."""

    def __init__(self, native: QuantizedEmbedding) -> None:
        super().__init__()
        levels, scales, offsets = native.rows()
        self.register_buffer("levels", levels)
        self.register_buffer("scales", scales.unsqueeze(1))
        self.register_buffer("offsets", offsets.unsqueeze(1))
        self.bag, self.mode, self.include_last_offset = native.bag, native.mode, native.include_last_offset

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        table = self.levels.to(torch.float32) * self.scales + self.offsets
        if not self.bag:
            return F.embedding(indices, table)
        return F.embedding_bag(indices, table, offsets, mode=self.mode, per_sample_weights=per_sample_weights,
                               include_last_offset=self.include_last_offset)


def _float_layer(native: nn.Module) -> nn.Module:
    """The float module an int8 conv/linear computes, with its ReLU when fused; without a weight, which
    ``DequantizedWeight`` supplies (built on the meta device, so no float weight is ever allocated)."""
    q, bias = native.qweight, native.bias
    if isinstance(native, QuantizedConv):
        kernel, groups = tuple(q.shape[2:]), native.groups
        if native.transposed:  # weight: (in, out / groups, *kernel)
            layer = getattr(nn, f"ConvTranspose{native.dims}d")(
                q.shape[0], q.shape[1] * groups, kernel, native.stride, native.padding, native.output_padding,
                groups, bias is not None, native.dilation, device="meta")
        else:
            layer = getattr(nn, f"Conv{native.dims}d")(
                q.shape[1] * groups, q.shape[0], kernel, native.stride, native.padding, native.dilation, groups,
                bias is not None, device="meta")
    else:
        layer = nn.Linear(q.shape[1], q.shape[0], bias is not None, device="meta")
    del layer.weight
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return nn.Sequential(layer, nn.ReLU()) if native.relu else layer


# What each int8 kernel computes in float, given the kernel's own arguments (its output qparams are dropped:
# the quantize after the op applies them).
def _batch_norm(x, weight, bias, mean, var, eps, scale, zero_point):
    return F.batch_norm(x, mean, var, weight, bias, eps=eps)


_FLOAT_FORMS = {
    "add": lambda a, b, scale, zero_point: a + b,
    "add_relu": lambda a, b, scale, zero_point: torch.relu(a + b),
    "mul": lambda a, b, scale, zero_point: a * b,
    "mul_relu": lambda a, b, scale, zero_point: torch.relu(a * b),
    "matmul": lambda a, b, scale, zero_point: torch.matmul(a, b),
    "cat": lambda tensors, dim, scale, zero_point: torch.cat(tensors, dim),
    "layer_norm": lambda x, shape, w, b, eps, scale, zero_point: F.layer_norm(x, shape, w, b, eps),
    "group_norm": lambda x, groups, w, b, eps, scale, zero_point: F.group_norm(x, groups, w, b, eps),
    "instance_norm": lambda x, w, b, eps, scale, zero_point: F.instance_norm(x, weight=w, bias=b, eps=eps),
    "batch_norm": _batch_norm,
    "batch_norm_relu": lambda *args: torch.relu(_batch_norm(*args)),
    "softmax": lambda x, dim, scale, zero_point: torch.softmax(x, dim),
    "leaky_relu": lambda x, slope, inplace, scale, zero_point: F.leaky_relu(x, slope),
    "elu": lambda x, scale, zero_point, alpha=1.0: F.elu(x, alpha),
    "sigmoid": lambda x, scale, zero_point: torch.sigmoid(x),
    "hardswish": lambda x, scale, zero_point: F.hardswish(x),
}


def float_kernel(name: str, *args, **kwargs):
    """The float form of int8 kernel ``name`` (see ``_FLOAT_FORMS``); a graph target, so the kernel's node stays
    one readable call."""
    return _FLOAT_FORMS[name](*args, **kwargs)


def _kernel_name(target) -> str | None:
    """The ``_FLOAT_FORMS`` key of an int8 kernel target (``quantized.batch_norm2d_relu`` -> "batch_norm_relu"),
    "" for an int8 kernel it has none for, None for anything else."""
    if target is group_norm:
        return "group_norm"
    if not (isinstance(target, (torch._ops.OpOverloadPacket, torch._ops.OpOverload))
            and str(target).startswith("quantized.")):
        return None
    name = str(target).split(".")[1]
    for dims in ("1d", "2d", "3d"):
        name = name.replace(f"batch_norm{dims}", "batch_norm")
    return name if name in _FLOAT_FORMS else ""


def decompose(qm: GraphModule, example_inputs=None) -> tuple[GraphModule, tuple]:
    """A copy of the converted model ``qm`` in the representation the module docstring describes, and the inputs
    to trace it with (``example_inputs``, else the ones ``fxq.prepare`` kept or inputs like them), on which it was run
    once to find which values are int8.

    Raises:
        ConfigError: ``qm`` is not a converted model, or holds an op this representation cannot express (the
            message names the node).
    """
    _check_converted(qm)
    inputs = _inputs(qm, example_inputs)
    gm = copy.deepcopy(qm)
    quantized = _quantized_outputs(gm, inputs)
    modules = dict(gm.named_modules())  # before any is replaced: a module may be called more than once
    for node in list(gm.graph.nodes):
        _rewrite(gm, node, quantized.get(node), modules)
    gm.graph.lint()
    result = GraphModule(gm, gm.graph, class_name="Decomposed")
    return result.eval(), inputs


def _check_converted(model) -> None:
    if isinstance(model, ConvertedGraphModule):
        return
    if isinstance(model, GraphModule) and any(isinstance(m, Observer) for m in model.modules()):
        raise ConfigError("fxq.export got a prepared model (it holds observers): run calibration data through it, "
                          "then export fxq.convert(prepared)")
    raise ConfigError(f"fxq.export takes a converted model (what fxq.convert or fxq.quantize returns), got "
                      f"{type(model).__name__}; quantize it first")


def _inputs(qm: GraphModule, example_inputs) -> tuple:
    if example_inputs is not None:
        return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    inputs = example_inputs_of(qm)
    if inputs is None:
        raise ConfigError("this model's recorded inputs are not all tensors; pass example_inputs to fxq.export")
    return inputs


def _quantized_outputs(gm: GraphModule, inputs: tuple) -> dict[Node, torch.Tensor]:
    """The quantized tensors the graph's nodes produce on ``inputs`` (which nodes carry int8 values, and their
    qparams, as the kernels actually made them)."""
    found: dict[Node, torch.Tensor] = {}

    class Recorder(Interpreter):
        def run_node(self, node: Node):
            value = super().run_node(node)
            if isinstance(value, torch.Tensor) and value.is_quantized:
                found[node] = value
            return value

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return found


def _rewrite(gm: GraphModule, node: Node, value: torch.Tensor | None, modules: dict[str, nn.Module]) -> None:
    """Rewrite ``node`` to compute in float; ``value`` is its quantized output on the example inputs, if any."""
    graph = gm.graph
    if node.op == "get_attr" and value is not None:  # an int8 weight a functional op dequantizes
        name = _fresh_name(gm, node.target.replace(".", "_") + "_int8")
        gm.add_submodule(name, Int8Weight(value))
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.call_module(name))
        graph.erase_node(node)
        return
    if _is_dequantize(node):
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
        return
    if node.op == "call_module":
        _rewrite_module(gm, node, modules[node.target])
    elif node.target is torch.ops.aten.contiguous.default:
        # exported graphs keep ``x.contiguous()`` as this composite op; re-exporting it, torch.onnx took it for a
        # no-op on a transposed value and turned the reshape after it into an invalid view (a tiny Swin)
        node.target, node.kwargs = torch.ops.aten.clone.default, {"memory_format": torch.contiguous_format}
    elif node.op == "call_function" and node.target is not torch.quantize_per_tensor:
        name = _kernel_name(node.target)
        if name == "":
            raise ConfigError(f"fxq.export cannot map node {node.name!r}: it calls the int8 kernel {node.target}, "
                              "which has no float form in the exporters")
        if name is not None:
            node.target, node.args = float_kernel, (name, *node.args)
    if value is not None:
        _quantize_output(graph, node, value)


def _rewrite_module(gm: GraphModule, node: Node, module: nn.Module) -> None:
    """Swap an int8 module for its float form on an ``Int8Weight`` (once per module, however often called)."""
    if isinstance(module, QuantizedLinearFloatOutput):  # the kernel quantizes its float input itself
        _quantize_input(gm.graph, node, module.input_scale, module.input_zero_point)
    if isinstance(gm.get_submodule(node.target), DequantizedWeight):
        return
    if isinstance(module, (QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput)):
        replacement = DequantizedWeight(_float_layer(module), module.qweight, "0.weight" if module.relu else "weight")
    elif isinstance(module, WeightQuantized):
        replacement = DequantizedWeight(module.module, module.qweight, module.weight_name)
    elif isinstance(module, QuantizedEmbedding):
        replacement = DequantizedEmbedding(module)
    elif type(module).__module__.startswith("fxq.nn.quantized"):
        raise ConfigError(f"fxq.export cannot map node {node.name!r}: it runs {type(module).__name__} "
                          f"({node.target}), which has no float form in the exporters")
    else:
        return
    owner, _, leaf = node.target.rpartition(".")
    setattr(gm.get_submodule(owner), leaf, replacement)


def _quantize_output(graph, node: Node, value: torch.Tensor) -> None:
    """Follow ``node`` by the quantize/dequantize pair its int8 output implies; a quantize node becomes that pair."""
    if value.qscheme() != torch.per_tensor_affine:
        raise ConfigError(f"fxq.export cannot map node {node.name!r}: it makes a {value.qscheme()} activation; "
                          "only per-tensor activations are supported")
    source = node.args[0] if node.target is torch.quantize_per_tensor else node
    with graph.inserting_after(node):
        q = graph.call_function(quantize, (source, value.q_scale(), value.q_zero_point(), _INT_DTYPES[value.dtype]))
    with graph.inserting_after(q):
        dq = graph.call_function(dequantize, (q, value.q_scale(), value.q_zero_point()))
    node.replace_all_uses_with(dq, delete_user_cb=lambda user: user is not q)
    if source is not node:
        graph.erase_node(node)


def _quantize_input(graph, node: Node, scale: float, zero_point: int) -> None:
    source = node.args[0]
    with graph.inserting_before(node):
        q = graph.call_function(quantize, (source, scale, zero_point, torch.uint8))
        node.replace_input_with(source, graph.call_function(dequantize, (q, scale, zero_point)))


def _is_dequantize(node: Node) -> bool:
    return ((node.op == "call_method" and node.target == "dequantize")
            or (node.op == "call_function" and node.target in (torch.dequantize, torch.ops.aten.dequantize.self)))


def _fresh_name(gm: GraphModule, base: str) -> str:
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name


def batch_dynamic(inputs: tuple) -> tuple:
    """``dynamic_shapes`` for exporting with ``inputs``: the first dimension of each tensor may vary. ``Dim.AUTO``
    keeps it fixed, without an error, where the model fixes it (a graph captured by torch.export with batch 1)."""
    return tuple({0: torch.export.Dim.AUTO} if isinstance(x, torch.Tensor) and x.dim() else None for x in inputs)
