"""equalize: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"), so that the weight
channels of consecutive layers span similar ranges and per-tensor (or per-row) rounding costs each less.

Needs a fused graph (batch norms folded, ReLUs fused into their conv/linear) in eval mode. For each conv ->
conv (same rank) or linear -> linear pair whose first output reaches the second only through positively
homogeneous ops (ReLU, leaky ReLU, pooling, identity: f(x / s) = f(x) / s for s > 0), output channel i of the
first layer (weight row and bias) is divided by s_i and input channel i of the second multiplied by it, with
s_i = sqrt(r1_i / r2_i) so both channel ranges become sqrt(r1_i * r2_i); chains are swept until the scales
settle. Grouped and depthwise convs map input channel i to its group; every conv padding mode (zeros, reflect,
replicate, circular) pads a channel from itself, so it scales along. The float function is unchanged up to
rounding. Touched modules are copies at their node's path (the model's own modules and shared parameters are
never written); each touched node's history records the range of its scales, each refused pair the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info, stamp
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import FusedModule
from fxq.pass_registry import register_pass
from fxq.rewriter import Declined

NAME = "equalize"
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# Ops that commute with a positive per-channel scale and keep channel i in channel i.
_HOMOGENEOUS = frozenset({"relu", "leaky_relu", "identity", "max_pool1d", "max_pool2d", "max_pool3d",
                          "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                          "adaptive_avg_pool3d"})
# Activations with a fixed clip, offset or curvature: f(x / s) != f(x) / s (ReLU6 clips at 6 whatever s is).
_NOT_HOMOGENEOUS = frozenset({"relu6", "hardtanh", "gelu", "silu", "hardswish", "elu", "sigmoid", "hardsigmoid",
                              "tanh", "softmax", "batch_norm", "batch_norm_relu", "layer_norm", "group_norm",
                              "instance_norm"})


@dataclass
class _Pair:
    first: Node
    second: Node
    scale: torch.Tensor  # the product of every sweep's s, for the record


def _layer(node: Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The conv/linear a call computes first: the module itself, or a fused conv/linear + ReLU's first member."""
    if node.op != "call_module":
        return None
    module = modules[node.target]
    if isinstance(module, FusedModule) and len(module) == 2 and isinstance(module[1], nn.ReLU):
        module = module.op
    return module if type(module) in _LAYERS else None


def _only_input_is(node: Node, value: Node) -> bool:
    return node.all_input_nodes == [value] and bool(node.args) and node.args[0] is value


def _partner(first: Node, modules: dict[str, nn.Module]) -> Node | Declined | None:
    """The layer ``first``'s output reaches through homogeneous single-user ops; a Declined when a layer is
    reached but cannot be equalized with it; None when no layer follows."""
    value = first
    while True:
        users = list(value.users)
        if len(users) != 1:
            if any(_layer(u, modules) is not None or info(u).concept in _HOMOGENEOUS for u in users):
                names = ", ".join(u.name for u in users)
                return Declined(f"{value.name}'s output has {len(users)} users ({names}): rescaling its channels "
                                f"would change what the others read")
            return None
        user = users[0]
        if not _only_input_is(user, value):
            return None
        if _layer(user, modules) is not None:
            return _check(first, user, modules)
        concept = info(user).concept
        if concept in _HOMOGENEOUS:
            value = user
            continue
        after = list(user.users)
        if len(after) != 1 or _layer(after[0], modules) is None:
            return None
        what = f"{user.name} ({concept or user.op}) between {first.name} and {after[0].name}"
        if concept in _NOT_HOMOGENEOUS:
            return Declined(f"{what} is not positively homogeneous: f(x / s) != f(x) / s, so scaling would change "
                            f"the function")
        return Declined(f"{what}: equalize sees only through ops that keep channel i in channel i and commute "
                        f"with a positive scale")


def _check(first: Node, second: Node, modules: dict[str, nn.Module]) -> Node | Declined:
    one, two = _layer(first, modules), _layer(second, modules)
    for node, layer in ((first, one), (second, two)):
        if layer.training:
            return Declined(f"module {node.target!r} is in training mode; equalization needs fixed weights")
    if type(one) is not type(two):
        return Declined(f"{first.name} is a {type(one).__name__} and {second.name} a {type(two).__name__}: their "
                        f"channel dimensions differ")
    channels = one.weight.shape[0]
    if _inputs(two) != channels:
        return Declined(f"{first.name} has {channels} output channels but {second.name} reads {_inputs(two)}")
    return second


def _inputs(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _groups(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.Linear) else layer.groups


def _output_ranges(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().abs().flatten(1).amax(1)


def _grouped(layer: nn.Module) -> torch.Tensor:
    """The weight as (groups, outputs per group, inputs per group, kernel): input channel i is [i // n, :, i % n]."""
    weight, groups = layer.weight.detach(), _groups(layer)
    return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)


def _input_ranges(layer: nn.Module) -> torch.Tensor:
    return _grouped(layer).abs().amax(dim=(1, 3)).flatten()


def _scales(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """s_i = sqrt(r1_i / r2_i); 1 for a channel either layer leaves at zero (nothing to balance)."""
    r1, r2 = _output_ranges(first), _input_ranges(second)
    usable = (r1 > 0) & (r2 > 0)
    return torch.where(usable, torch.sqrt(r1 / torch.where(usable, r2, 1)), torch.ones_like(r1))


def _rescale(first: nn.Module, second: nn.Module, s: torch.Tensor) -> None:
    """Divide ``first``'s output channels by s and multiply ``second``'s input channels by it (new tensors)."""
    rows = s.reshape(-1, *[1] * (first.weight.dim() - 1))
    first.weight = nn.Parameter(first.weight.detach() / rows, requires_grad=first.weight.requires_grad)
    if first.bias is not None:
        first.bias = nn.Parameter(first.bias.detach() / s, requires_grad=first.bias.requires_grad)
    grouped = _grouped(second)
    columns = s.reshape(grouped.shape[0], 1, grouped.shape[2], 1)
    second.weight = nn.Parameter((grouped * columns).reshape(second.weight.shape),
                                 requires_grad=second.weight.requires_grad)


def _own_copies(gm: GraphModule, nodes: set[Node], modules: dict[str, nn.Module]) -> None:
    """Give each node to rescale a copy of its module, so no module or tensor shared with the user's model (or
    with another call site of the same module) changes."""
    for node in nodes:
        parent_path, _, leaf = node.target.rpartition(".")
        copied = copy.deepcopy(modules[node.target])
        setattr(gm.get_submodule(parent_path) if parent_path else gm, leaf, copied)
        modules[node.target] = copied


def _span(s: torch.Tensor) -> str:
    return f"{s.min().item():.3g}..{s.max().item():.3g}"


@register_pass
@dataclass(frozen=True)
class Equalize(GraphPass):
    """Cross-layer equalization (see the module docstring).

    Attributes:
        sweeps: at most this many passes over all pairs (a lone pair settles in one; chains share layers and
            need several).
        tolerance: stop once no sweep's scale differs from 1 by more than this.
    """

    name = NAME
    requires = frozenset({"fused"})
    provides = frozenset({"equalized"})
    preserves_numerics = True
    sweeps: int = 100
    tolerance: float = 1e-3

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        modules = dict(gm.named_modules())
        pairs = []
        for node in list(gm.graph.nodes):
            if _layer(node, modules) is None:
                continue
            found = _partner(node, modules)
            if isinstance(found, Declined):
                info(node).declined.append((NAME, found.reason))
            elif found is not None:
                pairs.append(_Pair(node, found, torch.ones(_layer(node, modules).weight.shape[0])))
        if not pairs:
            return gm
        _own_copies(gm, {node for pair in pairs for node in (pair.first, pair.second)}, modules)
        for _ in range(self.sweeps):
            moved = 0.0
            for pair in pairs:
                first, second = _layer(pair.first, modules), _layer(pair.second, modules)
                s = _scales(first, second)
                _rescale(first, second, s)
                pair.scale = pair.scale * s.to(pair.scale.dtype)
                moved = max(moved, (s - 1).abs().max().item())
            if moved <= self.tolerance:
                break
        for pair in pairs:
            stamp(pair.first, NAME, f"output channels / s for {pair.second.name}: s {_span(pair.scale)}")
            stamp(pair.second, NAME, f"input channels * s from {pair.first.name}: s {_span(pair.scale)}")
        return gm
