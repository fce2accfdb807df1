"""Lowering rules from the reference graph to native int8 kernels (``torch.ops.quantized``), shared by the x86
and qnnpack backends.

Rules are anchored at a ``quantize`` node and match ``quantize(op(dequantize(x), ...))``: the op then reads the
quantized ``x`` directly and produces the quantized value itself, so quantized tensors flow from op to op. The
exception is a linear whose output only float ops read: anchored at the linear, it becomes a kernel returning float.
What no rule matches stays as reference ``dequantize -> float op -> quantize``, which is correct, only slower.
"""

from __future__ import annotations

import functools
from operator import attrgetter

import torch
from torch import nn
from torch.fx import Node

from fxq.annotation import FLOAT_OUTPUT, info, take_over
from fxq.backends.resize_modes import no_int8_resize
from fxq.clamp_bounds import clamp_bounds
from fxq.nn.fused import FusedModule
from fxq.nn.quantized import QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput
from fxq.nn.quantized.group_norm import group_norm
from fxq.nn.reference import WeightQuantized
from fxq.pattern import ANY, Pattern
from fxq.qparams import qrange
from fxq.rewriter import Declined, Rewriter, Rule
from fxq.shapes import TensorInfo, value_of

_WEIGHTED = ("linear", "linear_relu", "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu",
             "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_BINARY = {"add": torch.ops.quantized.add, "add_relu": torch.ops.quantized.add_relu,
           "mul": torch.ops.quantized.mul, "mul_relu": torch.ops.quantized.mul_relu,
           "matmul": torch.ops.quantized.matmul}
_ACTIVATIONS = ("sigmoid", "tanh", "softmax", "hardsigmoid", "hardswish", "leaky_relu", "elu")
_NORMS = ("layer_norm", "group_norm", "instance_norm", "batch_norm", "batch_norm_relu")
# Ops torch runs on a quantized tensor as it is, keeping its qparams. (Not mean: torch's int8 mean rounds
# differently from the reference and drifts by ~1 step, so it stays a dequantize -> mean -> quantize island.)
SHARED = ("relu", "relu6", "hardtanh", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
          "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "flatten", "reshape",
          "transpose", "permute", "squeeze", "unsqueeze", "contiguous", "dropout", "identity", "getitem", "chunk",
          "split", "slice")


def _dq(name: str) -> Pattern:
    return Pattern("dequantize", (ANY,), name=name, multi_user=True)


def _output_qparams(q: Node) -> tuple[float, int]:
    return q.args[1], q.args[2]


def _becomes(new: Node, q: Node, op: Node) -> Node:
    """``new`` now computes what ``op`` computed and produces what ``q`` produced: it takes over op's record
    (when it is a new node) and carries q's output qparams."""
    if new is not op:
        take_over(new, op)
    info(new).qparams["output"] = info(q).qparams.get("output", {})
    return new


def weighted_module(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> reference linear/conv module or functional call -> quantize  =>  one native module on the
    quantized input."""
    if op.op == "call_module":
        made = _native_from_module(rw, op, q)
    else:
        made = _native_from_call(rw, op, q)
    if isinstance(made, Declined):
        return made
    native, keep_node = made
    problem = _qnnpack_bias_overflows(native, _qparams_of(x.args[0]))
    if problem:
        return Declined(f"{op.name}: {problem}")
    node = _install(rw, op, native, keep_node, x.args[0], before=q)
    _becomes(node, q, op)
    info(node).lowered_to = type(native).__name__ + ("+relu" if native.relu else "")
    return node


def _install(rw: Rewriter, op: Node, native: nn.Module, keep_node: bool, source: Node, before: Node) -> Node:
    """The node that runs ``native`` on ``source`` in place of ``op``: ``op`` itself with its module swapped, or,
    for a functional op, a call of ``native`` added as a new submodule."""
    if keep_node:
        rw.set_module(op.target, native)
        op.args, op.kwargs = (source,), {}
        return op
    name = rw.unique_name(f"{op.name}_int8")
    rw.gm.add_submodule(name, native)
    rw.modules[name] = native
    return rw.insert("call_module", name, (source,), before=before, like=op)


def float_output_linear(rw: Rewriter, op: Node, x: Node) -> Node | Declined:
    """dequantize -> linear (+relu) whose output only float ops read  =>  the int8 linear that returns float.

    The kernel quantizes its float input itself with the observed qparams, so it reads the value before the
    quantize; an input that arrives int8 from another kernel is read dequantized, and requantizing it with the
    same qparams is exact."""
    if info(op).precision != FLOAT_OUTPUT:
        return Declined(f"{op.name}'s output is requantized, so the int8-output kernel rule applies")
    quantized = x.args[0]
    qparams = _qparams_of(quantized)
    if qparams is None or _dtype_of(quantized) != torch.quint8:
        return Declined(f"{op.name}'s input is not quint8 per tensor, which the float-output kernel needs")
    source = quantized.args[0] if _is_quantize(quantized) else x
    made = (_native_from_module if op.op == "call_module" else _native_from_call)(rw, op, None, qparams)
    if isinstance(made, Declined):
        return made
    native, keep_node = made
    node = _install(rw, op, native, keep_node, source, before=op)
    if node is not op:
        take_over(node, op)
    info(node).lowered_to = type(native).__name__ + ("+relu" if native.relu else "")
    return rw.stamp(node)


def _qnnpack_bias_overflows(native: nn.Module, input_qparams) -> str | None:
    """qnnpack adds the bias in int32 at scale input_scale * weight_scale; an input calibration saw as all but
    constant has a tiny scale, the bias then overflows int32, and the kernel returns garbage (measured: 7 dB where
    the reference graph has 47)."""
    if torch.backends.quantized.engine != "qnnpack" or native.bias is None or input_qparams is None:
        return None
    weight = native.qweight
    per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    weight_scale = float(weight.q_per_channel_scales().min()) if per_channel else weight.q_scale()
    largest = float(native.bias.abs().max()) / (input_qparams[0] * weight_scale)
    if largest < 2.0 ** 31:
        return None
    return (f"qnnpack adds the bias in int32 at the input's scale {input_qparams[0]:.3g} times the weight's, where it "
            "overflows; it stays a reference island")


def _native_from_module(rw: Rewriter, op: Node, q: Node | None,
                        float_input: tuple[float, int] | None = None) -> tuple[nn.Module, bool] | Declined:
    module = rw.modules.get(op.target)
    if not isinstance(module, WeightQuantized):
        return Declined(f"{op.name}'s weight was not quantized")
    inner = module.module
    relu = isinstance(inner, FusedModule)
    layer = inner[0] if relu else inner
    bias = layer.bias.detach() if layer.bias is not None else None
    if isinstance(layer, nn.Linear):
        return _linear(module.qweight, bias, relu, q, float_input), True
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                              nn.ConvTranspose3d)):
        return Declined(f"no native kernel for {type(layer).__name__}")
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return Declined(f"{op.name} uses padding {layer.padding!r} / mode {layer.padding_mode!r}; the int8 "
                        "kernel supports explicit zero padding only")
    transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    return _conv(module.qweight, bias, q, relu, layer.stride, layer.padding, layer.dilation, layer.groups,
                 transposed, getattr(layer, "output_padding", 0)), True


# Positional order of the functional convolutions' settings after (input, weight, bias), with defaults.
_CONV_ARGS = (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))
_CONV_TRANSPOSE_ARGS = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))


def _native_from_call(rw: Rewriter, op: Node, q: Node | None,
                      float_input: tuple[float, int] | None = None) -> tuple[nn.Module, bool] | Declined:
    """F.linear / F.conv*d / F.conv_transpose*d whose weight lowering quantized and whose bias is a constant."""
    weight = op.args[1] if len(op.args) > 1 else op.kwargs.get("weight")
    if not (_is_dq(weight) and weight.args[0].op == "get_attr"):
        return Declined(f"{op.name}'s weight is computed at run time; only constant weights are prepacked")
    qweight = attrgetter(weight.args[0].target)(rw.gm)
    bias_node = op.args[2] if len(op.args) > 2 else op.kwargs.get("bias")
    if bias_node is not None and not (isinstance(bias_node, Node) and bias_node.op == "get_attr"):
        return Declined(f"{op.name}'s bias is computed at run time; only a constant bias is prepacked")
    bias = attrgetter(bias_node.target)(rw.gm).detach() if bias_node is not None else None
    concept = info(op).concept
    if concept == "linear":
        return _linear(qweight, bias, False, q, float_input), False
    transposed = concept.startswith("conv_transpose")
    names = _CONV_TRANSPOSE_ARGS if transposed else _CONV_ARGS
    settings = {name: op.args[3 + i] if len(op.args) > 3 + i else op.kwargs.get(name, default)
                for i, (name, default) in enumerate(names)}
    if isinstance(settings["padding"], str):
        return Declined(f"{op.name} uses padding {settings['padding']!r}; the int8 kernel needs explicit padding")
    return _conv(qweight, bias, q, False, settings["stride"], settings["padding"], settings["dilation"],
                 settings["groups"], transposed, settings.get("output_padding", 0)), False


def _linear(qweight, bias, relu: bool, q: Node | None, float_input: tuple[float, int] | None) -> nn.Module:
    """The int8 linear producing ``q``'s qparams, or, given the input's qparams instead, the one returning float."""
    if float_input is not None:
        return QuantizedLinearFloatOutput(qweight, bias, *float_input, relu)
    return QuantizedLinear(qweight, bias, *_output_qparams(q), relu)


def _conv(qweight, bias, q: Node, relu: bool, stride, padding, dilation, groups, transposed: bool,
          output_padding) -> QuantizedConv:
    scale, zero_point = _output_qparams(q)
    return QuantizedConv(qweight, bias, scale, zero_point, relu, stride, padding, dilation, groups,
                         transposed=transposed, output_padding=output_padding)


def binary(rw: Rewriter, q: Node, op: Node, a: Node, b: Node) -> Node | Declined:
    """dequantize(a) (+, *, @) dequantize(b) -> quantize  =>  quantized.add / mul / matmul (+relu)."""
    if op.kwargs or len(op.args) != 2:
        return Declined(f"{op.name} has extra arguments; only a plain binary op lowers")
    scale, zero_point = _output_qparams(q)
    ratios_checked = info(op).concept.startswith("add")  # mul and matmul requantize a product instead
    problem = ratios_checked and _qnnpack_refuses((_qparams_of(a.args[0]), _qparams_of(b.args[0])), scale)
    if problem:
        return Declined(f"{op.name}: {problem}")
    kernel = _BINARY[info(op).concept]
    return _kernel_call(rw, q, op, kernel, (a.args[0], b.args[0], scale, zero_point))


# qnnpack's requantizing kernels (add, elu, leaky_relu, ...) take input/output scale ratios in [2**-14, 2**8) only:
# add fails to create its operator outside, elu returns garbage (measured: 4.7 dB where the reference graph has 40).
# A value calibration saw as all but constant has a tiny scale and falls outside.
QNNPACK_SCALE_RATIO = (2.0 ** -14, 2.0 ** 8)


def _qnnpack_refuses(inputs: tuple, output_scale: float) -> str | None:
    """Why qnnpack cannot requantize these inputs to ``output_scale``, or None (other engines have no limit)."""
    if torch.backends.quantized.engine != "qnnpack":
        return None
    low, high = QNNPACK_SCALE_RATIO
    for qparams in inputs:
        ratio = qparams[0] / output_scale if qparams else None
        if ratio is not None and not low <= ratio < high:
            return (f"qnnpack's int8 kernels take input/output scale ratios in [2**-14, 2**8), here {ratio:.3g}; "
                    "it stays a reference island")
    return None


def concatenate(rw: Rewriter, q: Node, op: Node) -> Node | Declined:
    """cat([dequantize(a), dequantize(b), ...]) -> quantize  =>  quantized.cat."""
    tensors = op.args[0] if op.args else op.kwargs.get("tensors")
    dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(_is_dq(t) for t in tensors):
        return Declined(f"{op.name}'s inputs are not all quantized")
    scale, zero_point = _output_qparams(q)
    return _kernel_call(rw, q, op, torch.ops.quantized.cat, ([t.args[0] for t in tensors], dim, scale, zero_point))


def shared(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> maxpool/flatten/relu/... -> quantize with the input's qparams  =>  the op on the int8 tensor."""
    source = x.args[0]
    if _qparams_of(source) != _output_qparams(q):
        return Declined(f"{op.name}'s output qparams differ from its input's; it cannot run on the int8 tensor")
    op.replace_input_with(x, source)
    _view_as_reshape(op)
    info(op).lowered_to = f"int8 {info(op).concept}"
    return _becomes(rw.stamp(op), q, op)


def resize(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> interpolate -> quantize with the input's qparams  =>  the resize on the int8 tensor, in the
    modes torch has int8 kernels for (``resize_modes``); others stay a float island."""
    why = no_int8_resize(op, rw.modules)
    return Declined(why) if why else shared(rw, q, op, x)


def saturated_clamp(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> relu/relu6/hardtanh/clamp -> quantize with the input's qparams, where no int8 level of the
    input lies outside the bounds  =>  the input itself: the kernel that made it saturated there already
    (``observe-clamped`` observes such values clamped, so their levels end at the bounds). The input's node then
    stands for the clamp's value."""
    source = x.args[0]
    bounds = clamp_bounds(op, rw.modules)
    qparams = _qparams_of(source)
    if bounds is None or qparams is None or qparams != _output_qparams(q):
        return Declined(f"{op.name} has no constant bounds or changes the qparams")
    if _live_readers(source) != [x] or _live_readers(x) != [op]:
        return Declined(f"{op.name}'s input has other readers")
    if not _levels_inside(bounds, *qparams, q.args[3]):
        return Declined(f"{op.name}'s input has int8 levels outside [{bounds[0]:g}, {bounds[1]:g}]")
    record, clamp = info(source), info(op)
    record.fused_from = (record.fused_from or (source.name,)) + (clamp.fused_from or (op.name,))
    record.fused_group = "+".join(record.fused_from)
    record.origin = clamp.origin  # the input's value is now the clamp's
    return rw.stamp(source)


def _live_readers(node: Node) -> list[Node]:
    """``node``'s readers, without those an earlier rewrite left unread (erased when the rules are done)."""
    return [user for user in node.users if user.users or user.op == "output"]


def _levels_inside(bounds: tuple[float, float], scale: float, zero_point: int, dtype: torch.dtype) -> bool:
    """Whether clamping to ``bounds`` leaves every level of (scale, zero_point, dtype) as it is, with torch's
    own rounding of the bounds."""
    lowest, highest = qrange(dtype)
    ends = [min(max(bound, -1e30), 1e30) for bound in bounds]
    low, high = torch.quantize_per_tensor(torch.tensor(ends), scale, zero_point, dtype).int_repr().tolist()
    return low <= lowest and high >= highest


def _view_as_reshape(op: Node) -> None:
    """``view`` becomes ``reshape`` on int8 values: native convolutions leave them channels-last, where
    ``x.view(x.size(0), -1)`` has no view (the float model's contiguous tensor had one). ``reshape`` is the same
    view wherever one exists and a copy elsewhere; normalize removed in-place ops, so no one sees the aliasing."""
    if op.op == "call_method" and op.target == "view":
        op.target = "reshape"
    elif op.op == "call_function" and op.target is torch.ops.aten.view.default:
        op.target = torch.ops.aten.reshape.default


# The only quint8 output qparams some int8 kernels make: tanh and hardsigmoid take none ([-1, 1) and [0, 1)),
# and qnnpack's sigmoid refuses any scale but 1/256. Such ops lower only when a mapping fixed these qparams.
_KERNEL_FIXED_QPARAMS = {"tanh": (2.0 / 256.0, 128), "hardsigmoid": (1.0 / 256.0, 0)}
_QNNPACK_FIXED_QPARAMS = {"sigmoid": (1.0 / 256.0, 0)}


def activation(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> activation -> quantize  =>  its int8 kernel, producing the output qparams."""
    concept, source = info(op).concept, x.args[0]
    scale, zero_point = _output_qparams(q)
    fixed = _KERNEL_FIXED_QPARAMS.get(concept)
    if fixed is None and torch.backends.quantized.engine == "qnnpack":
        fixed = _QNNPACK_FIXED_QPARAMS.get(concept)
    if fixed is not None and ((scale, zero_point) != fixed or q.args[3] != torch.quint8):
        return Declined(f"{op.name}'s output qparams are not the fixed quint8 ones torch's int8 {concept} makes")
    problem = fixed is None and _qnnpack_refuses((_qparams_of(source),), scale)
    if problem:
        return Declined(f"{op.name}: {problem}")
    if concept in _KERNEL_FIXED_QPARAMS:
        kernel = torch.tanh if concept == "tanh" else torch.nn.functional.hardsigmoid
        return _kernel_call(rw, q, op, kernel, (source,))
    if concept == "softmax":
        dim = _setting(rw, op, "dim", 1, None)
        if dim is None:
            return Declined(f"{op.name} has no explicit dim")
        return _kernel_call(rw, q, op, torch.ops.quantized.softmax, (source, dim, scale, zero_point))
    if concept == "leaky_relu":
        slope = _setting(rw, op, "negative_slope", 1, 0.01)
        return _kernel_call(rw, q, op, torch.ops.quantized.leaky_relu, (source, slope, False, scale, zero_point))
    if concept == "elu":
        alpha = _setting(rw, op, "alpha", 1, 1.0)
        return _kernel_call(rw, q, op, torch.ops.quantized.elu, (source, scale, zero_point, alpha))
    kernel = {"sigmoid": torch.ops.quantized.sigmoid, "hardswish": torch.ops.quantized.hardswish}[concept]
    return _kernel_call(rw, q, op, kernel, (source, scale, zero_point))


def norm(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> LayerNorm / GroupNorm / InstanceNorm / BatchNorm (+ReLU) module -> quantize  =>  the int8
    normalisation kernel with the module's parameters."""
    concept = info(op).concept
    if op.op != "call_module":
        if concept == "layer_norm":
            return _functional_layer_norm(rw, q, op, x)
        return Declined(f"{op.name} is functional; only the module form of {concept} lowers to its int8 kernel")
    module = rw.modules[op.target]
    layer, prefix = (module[0], "0.") if isinstance(module, FusedModule) else (module, "")
    scale, zero_point = _output_qparams(q)
    source = x.args[0]

    def param(leaf: str) -> Node | None:
        return _attr(rw, op, prefix + leaf, getattr(layer, leaf))

    if concept == "layer_norm":
        args = (source, list(layer.normalized_shape), param("weight"), param("bias"), layer.eps, scale, zero_point)
        return _kernel_call(rw, q, op, torch.ops.quantized.layer_norm, args)
    if concept == "group_norm":
        args = (source, layer.num_groups, param("weight"), param("bias"), layer.eps, scale, zero_point)
        return _kernel_call(rw, q, op, group_norm, args)
    if concept == "instance_norm":
        if layer.track_running_stats:
            return Declined(f"{op.name} normalises with running statistics; the int8 kernel uses each instance's")
        args = (source, param("weight"), param("bias"), layer.eps, scale, zero_point)
        return _kernel_call(rw, q, op, torch.ops.quantized.instance_norm, args)
    rank = _rank(op)
    dims = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
    if dims is None or (concept == "batch_norm_relu" and dims == 1):
        return Declined(f"no int8 kernel for {concept} on a rank-{rank} tensor")
    if layer.running_mean is None:
        return Declined(f"{op.name} keeps no running statistics; the int8 kernel needs them")
    kernel = getattr(torch.ops.quantized, f"batch_norm{dims}d" + ("_relu" if concept == "batch_norm_relu" else ""))
    args = (source, param("weight"), param("bias"), param("running_mean"), param("running_var"), layer.eps, scale,
            zero_point)
    return _kernel_call(rw, q, op, kernel, args)


def _functional_layer_norm(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """F.layer_norm / aten.layer_norm(x, shape, weight, bias, eps) with constant parameters (exported graphs)."""
    shape = _setting(rw, op, "normalized_shape", 1, None)
    weight, bias = _setting(rw, op, "weight", 2, None), _setting(rw, op, "bias", 3, None)
    eps = _setting(rw, op, "eps", 4, 1e-5)
    for value in (weight, bias):
        if value is not None and not (isinstance(value, Node) and value.op == "get_attr"):
            return Declined(f"{op.name}'s affine parameters are computed at run time; the int8 kernel needs "
                            "constants")
    scale, zero_point = _output_qparams(q)
    args = (x.args[0], list(shape), weight, bias, eps, scale, zero_point)
    return _kernel_call(rw, q, op, torch.ops.quantized.layer_norm, args)


def _kernel_call(rw: Rewriter, q: Node, op: Node, kernel, args: tuple) -> Node:
    """A call of ``kernel`` that replaces ``op`` (and its quantize ``q``)."""
    node = rw.insert("call_function", kernel, args, before=q, like=op)
    info(node).lowered_to = _kernel_name(kernel)
    return _becomes(node, q, op)


def _kernel_name(kernel) -> str:
    name = getattr(kernel, "__name__", str(kernel))
    return name if name.startswith("quantized.") else f"quantized.{name.split('.')[-1]}"


def _setting(rw: Rewriter, op: Node, name: str, position: int, default):
    """An op setting from its module attribute, or its functional call's argument (positional or keyword)."""
    if op.op == "call_module":
        return getattr(rw.modules[op.target], name, default)
    if len(op.args) > position:
        return op.args[position]
    return op.kwargs.get(name, default)


def _rank(node: Node) -> int | None:
    value = value_of(node)
    return len(value.shape) if isinstance(value, TensorInfo) else None


def _attr(rw: Rewriter, near: Node, leaf: str, value) -> Node | None:
    if value is None:
        return None
    return rw.insert("get_attr", f"{near.target}.{leaf}", (), before=near, like=near)


def _is_dq(node: object) -> bool:
    return isinstance(node, Node) and info(node).lowered_to == "dequantize"


def _is_quantize(node: Node) -> bool:
    return node.op == "call_function" and node.target is torch.quantize_per_tensor


def _dtype_of(node: Node) -> torch.dtype | None:
    """The dtype of a quantized value: its quantize's argument, or what the kernel producing it recorded."""
    if _is_quantize(node):
        return node.args[3]
    recorded = info(node).qparams.get("output") or {}
    return getattr(torch, recorded["dtype"]) if "dtype" in recorded else None


def _qparams_of(node: Node) -> tuple[float, int] | None:
    if _is_quantize(node):
        return node.args[1], node.args[2]
    recorded = info(node).qparams.get("output")
    return (recorded["scale"], recorded["zero_point"]) if recorded and "scale" in recorded else None


def _rule(concept: str, rewrite, comment: str, inputs: int = 1) -> Rule:
    inner = tuple(_dq(name) for name in (["x"] if inputs == 1 else ["a", "b"])) if inputs else ()
    return Rule(Pattern("quantize", (Pattern(concept, inner, name="op"),), name="q"), _unless_float(rewrite), comment)


def _unless_float(rewrite):
    """``rewrite``, declining ops that insert-observers left float. Such an op still sits between a dequantize and
    a quantize when its neighbours are quantized, and with equal qparams on both sides it would otherwise run
    int8 against the backend's table (qnnpack's relu6: 5 dB) or the user's ``None`` rule."""

    @functools.wraps(rewrite)
    def unless_float(rw: Rewriter, op: Node, **captures) -> Node | Declined:
        if info(op).lowered_to == "float":
            return Declined(f"{op.name} stays float: {info(op).float_reason or 'it was not observed'}")
        return rewrite(rw, op=op, **captures)

    return unless_float


NATIVE_RULES = (
    # dequantize -> linear/conv (+relu), module or functional -> quantize: prepacked int8 module
    *[_rule(concept, weighted_module, "int8 weighted op") for concept in _WEIGHTED],
    # binary ops on two quantized inputs: quantized.add / mul / matmul (+relu)
    *[_rule(concept, binary, "int8 binary op", inputs=2) for concept in _BINARY],
    # cat of quantized tensors: quantized.cat
    _rule("cat", concatenate, "int8 cat", inputs=0),
    # activations with int8 kernels (fixed-range ones produce their fixed qparams)
    *[_rule(concept, activation, "int8 activation") for concept in _ACTIVATIONS],
    # normalisation modules with their parameters
    *[_rule(concept, norm, "int8 normalisation") for concept in _NORMS],
    # a clamp that the kernel before it computed already, by saturating: nothing to run
    *[_rule(concept, saturated_clamp, "int8 clamp already saturated") for concept in ("relu", "relu6", "hardtanh")],
    # range-preserving ops run on the int8 tensor as they are
    *[_rule(concept, shared, "op on int8 tensor") for concept in SHARED],
    _rule("interpolate", resize, "int8 resize"),
    # dequantize -> linear (+relu) read only by float ops: prepacked int8 module returning float. Last, so every
    # linear whose output is requantized is claimed above, and an input computed int8 by the rules above is read
    # as such rather than as the float value its reference form quantized.
    *[Rule(Pattern(concept, (_dq("x"),), name="op"), _unless_float(float_output_linear), "int8 linear, float out")
      for concept in ("linear", "linear_relu")],
)
