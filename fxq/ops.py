"""The op vocabulary: one concept name for every form an op takes in a graph.

``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` and ``aten.relu`` are all "relu" here, so pattern
authors, backend tables and QConfigMapping users speak in concepts and never list forms. In-place forms map to
the same concept and are flagged, so normalization can rewrite them out of place. To teach fxq a new op, add a
line to ``_TABLE`` (or call ``register_concept``): nothing else needs to change.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fxq.errors import ConfigError
from fxq.nn import functional as fxq_functional
from fxq.nn import fused


@dataclass(frozen=True)
class Concept:
    """The forms of one op. ``aten`` holds overload-packet names such as "aten.relu" (for exported graphs)."""

    name: str
    modules: tuple[type, ...] = ()
    functions: tuple = ()
    methods: tuple[str, ...] = ()
    aten: tuple[str, ...] = ()
    inplace_functions: tuple = ()
    inplace_methods: tuple[str, ...] = ()


def _c(name, modules=(), functions=(), methods=(), aten=(), inplace_functions=(), inplace_methods=()):
    return Concept(name, tuple(modules), tuple(functions), tuple(methods), tuple(aten),
                   tuple(inplace_functions), tuple(inplace_methods))


_TABLE: list[Concept] = [
    _c("linear", [nn.Linear], [F.linear], aten=["aten.linear"]),
    _c("conv1d", [nn.Conv1d], [F.conv1d], aten=["aten.conv1d"]),
    _c("conv2d", [nn.Conv2d], [F.conv2d], aten=["aten.conv2d"]),
    _c("conv3d", [nn.Conv3d], [F.conv3d], aten=["aten.conv3d"]),
    _c("conv_transpose1d", [nn.ConvTranspose1d], [F.conv_transpose1d], aten=["aten.conv_transpose1d"]),
    _c("conv_transpose2d", [nn.ConvTranspose2d], [F.conv_transpose2d], aten=["aten.conv_transpose2d"]),
    _c("conv_transpose3d", [nn.ConvTranspose3d], [F.conv_transpose3d], aten=["aten.conv_transpose3d"]),
    _c("batch_norm", [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d], [F.batch_norm],
       aten=["aten.batch_norm", "aten._native_batch_norm_legit_no_training"]),
    _c("layer_norm", [nn.LayerNorm], [F.layer_norm], aten=["aten.layer_norm"]),
    _c("group_norm", [nn.GroupNorm], [F.group_norm], aten=["aten.group_norm"]),
    _c("instance_norm", [nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d], [F.instance_norm],
       aten=["aten.instance_norm"]),
    _c("embedding", [nn.Embedding], [F.embedding], aten=["aten.embedding"]),
    _c("embedding_bag", [nn.EmbeddingBag], [F.embedding_bag]),
    _c("lstm", [nn.LSTM], aten=["aten.lstm"]),
    _c("gru", [nn.GRU], aten=["aten.gru"]),
    _c("lstm", [nn.LSTM]),
    _c("gru", [nn.GRU]),
    _c("relu", [nn.ReLU], [F.relu, torch.relu], ["relu"], ["aten.relu"],
       [F.relu_, torch.relu_], ["relu_"]),
    _c("relu6", [nn.ReLU6], [F.relu6], aten=["aten.relu6"]),
    _c("hardtanh", [nn.Hardtanh], [F.hardtanh, torch.clamp, torch.clip], ["clamp", "clip"],
       ["aten.hardtanh", "aten.clamp"], [F.hardtanh_, torch.clamp_], ["clamp_", "clip_"]),
    _c("gelu", [nn.GELU], [F.gelu], aten=["aten.gelu"]),
    _c("silu", [nn.SiLU], [F.silu], aten=["aten.silu"]),
    _c("hardswish", [nn.Hardswish], [F.hardswish], aten=["aten.hardswish"]),
    _c("elu", [nn.ELU], [F.elu], aten=["aten.elu"]),
    _c("leaky_relu", [nn.LeakyReLU], [F.leaky_relu], aten=["aten.leaky_relu"], inplace_functions=[F.leaky_relu_]),
    _c("sigmoid", [nn.Sigmoid], [torch.sigmoid, F.sigmoid], ["sigmoid"], ["aten.sigmoid"],
       [torch.sigmoid_], ["sigmoid_"]),
    _c("hardsigmoid", [nn.Hardsigmoid], [F.hardsigmoid], aten=["aten.hardsigmoid"]),
    _c("tanh", [nn.Tanh], [torch.tanh, F.tanh], ["tanh"], ["aten.tanh"], [torch.tanh_], ["tanh_"]),
    _c("softmax", [nn.Softmax], [F.softmax, torch.softmax], ["softmax"], ["aten.softmax", "aten._softmax"]),
    _c("add", [], [operator.add, torch.add], ["add"], ["aten.add"], [operator.iadd], ["add_"]),
    _c("mul", [], [operator.mul, torch.mul], ["mul"], ["aten.mul"], [operator.imul], ["mul_"]),
    _c("matmul", [], [operator.matmul, torch.matmul, torch.bmm], ["matmul", "bmm"], ["aten.matmul", "aten.bmm"]),
    _c("attention", [], [F.scaled_dot_product_attention], aten=["aten.scaled_dot_product_attention"]),
    _c("cat", [], [torch.cat, torch.concat], aten=["aten.cat"]),
    _c("max_pool1d", [nn.MaxPool1d], [F.max_pool1d], aten=["aten.max_pool1d"]),
    _c("max_pool2d", [nn.MaxPool2d], [F.max_pool2d], aten=["aten.max_pool2d"]),
    _c("max_pool3d", [nn.MaxPool3d], [F.max_pool3d], aten=["aten.max_pool3d"]),
    _c("avg_pool1d", [nn.AvgPool1d], [F.avg_pool1d], aten=["aten.avg_pool1d"]),
    _c("avg_pool2d", [nn.AvgPool2d], [F.avg_pool2d], aten=["aten.avg_pool2d"]),
    _c("avg_pool3d", [nn.AvgPool3d], [F.avg_pool3d], aten=["aten.avg_pool3d"]),
    _c("adaptive_avg_pool1d", [nn.AdaptiveAvgPool1d], [F.adaptive_avg_pool1d], aten=["aten.adaptive_avg_pool1d"]),
    _c("adaptive_avg_pool2d", [nn.AdaptiveAvgPool2d], [F.adaptive_avg_pool2d], aten=["aten.adaptive_avg_pool2d"]),
    _c("adaptive_avg_pool3d", [nn.AdaptiveAvgPool3d], [F.adaptive_avg_pool3d], aten=["aten.adaptive_avg_pool3d"]),
    _c("mean", [], [torch.mean], ["mean"], ["aten.mean"]),
    # resizing; exported graphs spell only the modes torch has int8 kernels for (bicubic, linear and trilinear
    # stay unknown ops there); traced ones name the mode in an argument, which lowering checks
    _c("interpolate", [nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d], [F.interpolate],
       aten=["aten.upsample_nearest2d", "aten.upsample_bilinear2d", "aten._upsample_nearest_exact2d",
             "aten.upsample_nearest3d", "aten._upsample_nearest_exact3d"]),
    _c("flatten", [nn.Flatten], [torch.flatten], ["flatten"], ["aten.flatten"]),
    _c("reshape", [], [torch.reshape], ["reshape", "view"], ["aten.reshape", "aten.view", "aten._unsafe_view"]),
    _c("transpose", [], [torch.transpose], ["transpose"], ["aten.transpose"]),
    _c("permute", [], [torch.permute], ["permute"], ["aten.permute"]),
    _c("squeeze", [], [torch.squeeze], ["squeeze"], ["aten.squeeze"]),
    _c("unsqueeze", [], [torch.unsqueeze], ["unsqueeze"], ["aten.unsqueeze"]),
    _c("contiguous", [], [], ["contiguous"], ["aten.clone"]),
    _c("chunk", [], [torch.chunk], ["chunk"], ["aten.chunk"]),
    _c("split", [], [torch.split], ["split"], ["aten.split"]),
    _c("getitem", [], [operator.getitem]),
    _c("slice", [], [], aten=["aten.slice", "aten.select"]),  # exported graphs' basic indexing (x[:, :-2], x[..., 0])
    _c("dropout", [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d], [F.dropout], aten=["aten.dropout"]),
    _c("identity", [nn.Identity]),
    _c("linear_relu", [fused.LinearReLU]),
    _c("conv1d_relu", [fused.ConvReLU1d]),
    _c("conv2d_relu", [fused.ConvReLU2d]),
    _c("conv3d_relu", [fused.ConvReLU3d]),
    _c("batch_norm_relu", [fused.BNReLU2d, fused.BNReLU3d]),
    _c("quantize", [], [torch.quantize_per_tensor]),
    _c("dequantize", [], [torch.dequantize], ["dequantize"]),
    _c("add_relu", [], [fxq_functional.add_relu]),
    _c("mul_relu", [], [fxq_functional.mul_relu]),
]

_BY_NAME: dict[str, Concept] = {}
_BY_KEY: dict[object, tuple[str, bool]] = {}


def register_concept(concept: Concept) -> None:
    """Teach fxq a new op concept (or new forms of one). A form already owned by another concept is an error."""
    for key, inplace in _keys(concept):
        owner = _BY_KEY.get(key)
        if owner is not None and owner[0] != concept.name:
            raise ConfigError(f"op form {key!r} already belongs to concept {owner[0]!r}; cannot also map it "
                              f"to {concept.name!r}")
        _BY_KEY[key] = (concept.name, inplace)
    _BY_NAME[concept.name] = concept


def _keys(concept: Concept) -> Iterable[tuple[object, bool]]:
    for module_type in concept.modules:
        yield ("module", module_type), False
    for function in concept.functions:
        yield ("function", function), False
    for method in concept.methods:
        yield ("method", method), False
    for aten in concept.aten:
        yield ("aten", aten), False
    for function in concept.inplace_functions:
        yield ("function", function), True
    for method in concept.inplace_methods:
        yield ("method", method), True


for _concept in _TABLE:
    register_concept(_concept)


def concept(name: str) -> Concept:
    """The concept called ``name``; ConfigError naming the known ones if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown op concept {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def aten_name(target: object) -> str | None:
    """"aten.relu" for ``torch.ops.aten.relu.default`` (or its packet); None for anything else."""
    packet = getattr(target, "overloadpacket", target)
    if isinstance(packet, torch._ops.OpOverloadPacket):
        return str(packet)
    return None


def form_key(node: Node, modules: dict[str, nn.Module]) -> object | None:
    """The lookup key of the form a node uses: its module's type, its function, method name or aten name."""
    if node.op == "call_module":
        return ("module", type(modules[node.target]))
    if node.op == "call_method":
        return ("method", node.target)
    if node.op == "call_function":
        name = aten_name(node.target)
        return ("aten", name) if name else ("function", node.target)
    return None


def key_of(op: object) -> object:
    """The lookup key for an op given by a pattern author: a module type, function, aten op or method name."""
    if isinstance(op, type):
        return ("module", op)
    name = aten_name(op)
    if name:
        return ("aten", name)
    if isinstance(op, str):
        return ("method", op)
    return ("function", op)


def concept_of_key(key: object) -> tuple[str, bool] | None:
    """(concept name, is in-place form) for a lookup key, or None if the form is unknown."""
    try:
        return _BY_KEY.get(key)
    except TypeError:  # unhashable targets are never known forms
        return None


def concept_of(node: Node, modules: dict[str, nn.Module]) -> str | None:
    """The concept a node computes, or None if its form is not in the vocabulary.

    fxq's own modules say what they compute with an ``fxq_concept`` attribute (a fused conv+relu, or a reference
    module wrapping a linear), which wins over the table.
    """
    if node.op == "call_module":
        declared = getattr(modules[node.target], "fxq_concept", None)
        if isinstance(declared, str) and declared:
            return declared
    found = concept_of_key(form_key(node, modules))
    return found[0] if found else None


def concept_of_module(module: nn.Module) -> str | None:
    """The concept a module computes (its ``fxq_concept``, else its type's), or None if unknown."""
    declared = getattr(module, "fxq_concept", None)
    if isinstance(declared, str) and declared:
        return declared
    found = concept_of_key(("module", type(module)))
    return found[0] if found else None


def is_inplace_form(node: Node, modules: dict[str, nn.Module]) -> bool:
    """True if the node uses an in-place form (``x.relu_()``, ``operator.iadd``, ``F.relu(x, inplace=True)``...)."""
    found = concept_of_key(form_key(node, modules))
    if found and found[1]:
        return True
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    return node.kwargs.get("inplace") is True


def known_concepts() -> list[str]:
    """Every concept name, sorted."""
    return sorted(_BY_NAME)
