"""Lowering rules from the reference graph to native int8 kernels (``torch.ops.quantized``), shared by the x86
and qnnpack backends.

Every rule is anchored at a ``quantize`` node and matches ``quantize(op(dequantize(x), ...))``: the op then reads
the quantized ``x`` directly and produces the quantized value itself, so quantized tensors flow from op to op.
What no rule matches stays as reference ``dequantize -> float op -> quantize``, which is correct, only slower.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import Node

from fxq.annotation import info
from fxq.nn.fused import FusedModule
from fxq.nn.quantized import QuantizedConv, QuantizedLinear
from fxq.nn.reference import WeightQuantized
from fxq.pattern import ANY, Pattern
from fxq.rewriter import Declined, Rewriter, Rule

_WEIGHTED = ("linear", "linear_relu", "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu")
_BINARY = {"add": torch.ops.quantized.add, "add_relu": torch.ops.quantized.add_relu,
           "mul": torch.ops.quantized.mul, "mul_relu": torch.ops.quantized.mul_relu,
           "matmul": torch.ops.quantized.matmul}
# Ops torch runs on a quantized tensor as it is, keeping its qparams. (Not mean: torch's int8 mean rounds
# differently from the reference and drifts by ~1 step, so it stays a dequantize -> mean -> quantize island.)
SHARED = ("relu", "relu6", "hardtanh", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
          "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "flatten", "reshape",
          "transpose", "permute", "squeeze", "unsqueeze", "contiguous", "dropout", "identity", "getitem", "chunk",
          "split")


def _dq(name: str) -> Pattern:
    return Pattern("dequantize", (ANY,), name=name, multi_user=True)


def _output_qparams(q: Node) -> tuple[float, int]:
    return q.args[1], q.args[2]


def _becomes(new: Node, q: Node) -> Node:
    """``new`` now produces what ``q`` produced: it carries q's output qparams."""
    info(new).qparams.setdefault("output", info(q).qparams.get("output", {}))
    return new


def weighted_module(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> reference linear/conv module -> quantize  =>  one native module on the quantized input."""
    module = rw.modules.get(op.target) if op.op == "call_module" else None
    if not isinstance(module, WeightQuantized):
        return Declined(f"{op.name} is not a weight-quantized module (functional forms are not lowered yet)")
    inner = module.module
    relu = isinstance(inner, FusedModule)
    layer = inner[0] if relu else inner
    bias = layer.bias.detach() if layer.bias is not None else None
    scale, zero_point = _output_qparams(q)
    if isinstance(layer, nn.Linear):
        native = QuantizedLinear(module.qweight, bias, scale, zero_point, relu)
    elif isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return Declined(f"{op.name} uses padding {layer.padding!r} / mode {layer.padding_mode!r}; the int8 "
                            "kernel supports explicit zero padding only")
        native = QuantizedConv(module.qweight, bias, scale, zero_point, relu, layer.stride, layer.padding,
                               layer.dilation, layer.groups)
    else:
        return Declined(f"no native kernel for {type(layer).__name__}")
    rw.set_module(op.target, native)
    op.args = (x.args[0],)
    info(op).lowered_to = f"{type(native).__name__}" + ("+relu" if relu else "")
    return _becomes(rw.stamp(op), q)


def binary(rw: Rewriter, q: Node, op: Node, a: Node, b: Node) -> Node | Declined:
    """dequantize(a) (+, *, @) dequantize(b) -> quantize  =>  quantized.add / mul / matmul (+relu)."""
    if op.kwargs or len(op.args) != 2:
        return Declined(f"{op.name} has extra arguments; only a plain binary op lowers")
    kernel = _BINARY[info(op).concept]
    scale, zero_point = _output_qparams(q)
    node = rw.insert("call_function", kernel, (a.args[0], b.args[0], scale, zero_point), before=q, like=op)
    info(node).lowered_to = f"quantized.{info(op).concept}"
    return _becomes(node, q)


def concatenate(rw: Rewriter, q: Node, op: Node) -> Node | Declined:
    """cat([dequantize(a), dequantize(b), ...]) -> quantize  =>  quantized.cat."""
    tensors = op.args[0] if op.args else op.kwargs.get("tensors")
    dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(_is_dq(t) for t in tensors):
        return Declined(f"{op.name}'s inputs are not all quantized")
    scale, zero_point = _output_qparams(q)
    node = rw.insert("call_function", torch.ops.quantized.cat, ([t.args[0] for t in tensors], dim, scale, zero_point),
                     before=q, like=op)
    info(node).lowered_to = "quantized.cat"
    return _becomes(node, q)


def shared(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> maxpool/flatten/relu/... -> quantize with the input's qparams  =>  the op on the int8 tensor."""
    source = x.args[0]
    if _qparams_of(source) != _output_qparams(q):
        return Declined(f"{op.name}'s output qparams differ from its input's; it cannot run on the int8 tensor")
    op.replace_input_with(x, source)
    info(op).lowered_to = f"int8 {info(op).concept}"
    return _becomes(rw.stamp(op), q)


def fixed_range(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> sigmoid/tanh/softmax -> quantize  =>  the quantized kernel with the fixed output qparams."""
    scale, zero_point = _output_qparams(q)
    concept = info(op).concept
    if concept == "softmax":
        dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim")
        if dim is None:
            return Declined(f"{op.name} has no explicit dim")
        node = rw.insert("call_function", torch.ops.quantized.softmax, (x.args[0], dim, scale, zero_point),
                         before=q, like=op)
    elif concept == "sigmoid":
        node = rw.insert("call_function", torch.ops.quantized.sigmoid, (x.args[0], scale, zero_point), before=q,
                         like=op)
    else:
        node = rw.insert("call_function", torch.tanh, (x.args[0],), before=q, like=op)
    info(node).lowered_to = f"quantized.{concept}"
    return _becomes(node, q)


def layer_norm(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> LayerNorm -> quantize  =>  quantized.layer_norm with the module's affine parameters."""
    if op.op != "call_module":
        return Declined(f"{op.name} is functional; only the module form lowers to the int8 layer norm")
    norm = rw.modules[op.target]
    scale, zero_point = _output_qparams(q)
    weight = _attr(rw, op, "weight", norm.weight)
    bias = _attr(rw, op, "bias", norm.bias)
    node = rw.insert("call_function", torch.ops.quantized.layer_norm,
                     (x.args[0], list(norm.normalized_shape), weight, bias, norm.eps, scale, zero_point),
                     before=q, like=op)
    info(node).lowered_to = "quantized.layer_norm"
    return _becomes(node, q)


def hardswish(rw: Rewriter, q: Node, op: Node, x: Node) -> Node | Declined:
    """dequantize -> hardswish -> quantize  =>  quantized.hardswish."""
    scale, zero_point = _output_qparams(q)
    node = rw.insert("call_function", torch.ops.quantized.hardswish, (x.args[0], scale, zero_point), before=q,
                     like=op)
    info(node).lowered_to = "quantized.hardswish"
    return _becomes(node, q)


def _attr(rw: Rewriter, near: Node, leaf: str, value) -> Node | None:
    if value is None:
        return None
    return rw.insert("get_attr", f"{near.target}.{leaf}", (), before=near, like=near)


def _is_dq(node: object) -> bool:
    return isinstance(node, Node) and info(node).lowered_to == "dequantize"


def _qparams_of(node: Node) -> tuple[float, int] | None:
    if node.op == "call_function" and node.target is torch.quantize_per_tensor:
        return node.args[1], node.args[2]
    recorded = info(node).qparams.get("output")
    return (recorded["scale"], recorded["zero_point"]) if recorded and "scale" in recorded else None


def _rule(concept: str, rewrite, comment: str, inputs: int = 1) -> Rule:
    inner = tuple(_dq(name) for name in (["x"] if inputs == 1 else ["a", "b"])) if inputs else ()
    return Rule(Pattern("quantize", (Pattern(concept, inner, name="op"),), name="q"), rewrite, comment)


NATIVE_RULES = (
    # dequantize -> linear/conv (+relu) -> quantize: prepacked int8 module
    *[_rule(concept, weighted_module, "int8 weighted op") for concept in _WEIGHTED],
    # binary ops on two quantized inputs: quantized.add / mul / matmul (+relu)
    *[_rule(concept, binary, "int8 binary op", inputs=2) for concept in _BINARY],
    # cat of quantized tensors: quantized.cat
    _rule("cat", concatenate, "int8 cat", inputs=0),
    # fixed output range: quantized sigmoid / tanh / softmax
    *[_rule(concept, fixed_range, "fixed-qparams op") for concept in ("sigmoid", "tanh", "softmax")],
    _rule("layer_norm", layer_norm, "int8 layer norm"),
    _rule("hardswish", hardswish, "int8 hardswish"),
    # range-preserving ops run on the int8 tensor as they are
    *[_rule(concept, shared, "op on int8 tensor") for concept in SHARED],
)
