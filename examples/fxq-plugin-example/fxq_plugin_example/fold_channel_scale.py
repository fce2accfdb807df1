"""fold-channel-scale: fold ``channel_scale(conv(x), gamma)`` into the conv: its output channels' weights and
bias scaled by ``gamma``. fxq has no int8 kernel for the custom op, so left alone it would run in float
between a dequantize and a quantize; folded, the layer is one int8 kernel and nothing is left to round.

Needs a normalized graph; run it before ``fuse`` (``passes={"before fuse": "fold-channel-scale"}``), so that
the conv can then fuse with what follows the scale (a ReLU). A scale after a batch norm is left alone. The
numbers are unchanged up to float rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import GraphModule, Node

import fxq
from fxq.annotation import info
from fxq_plugin_example import ops  # noqa: F401 - registers the op and its concept

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fold(rw: fxq.Rewriter, layer: Node, scale: Node) -> Node | fxq.Declined:
    """Scale the layer's output channels by the constant ``gamma`` and drop the op."""
    gamma_node = scale.args[1]
    if not (isinstance(gamma_node, Node) and gamma_node.op == "get_attr"):
        return fxq.Declined(f"{scale.name}'s scale is computed, not a parameter: nothing constant to fold")
    module, gamma = rw.modules[layer.target], rw.gm.get_parameter(gamma_node.target).detach()
    if gamma.shape != (module.weight.shape[0],):
        return fxq.Declined(f"{scale.name} scales {tuple(gamma.shape)} channels, {layer.name} has "
                            f"{module.weight.shape[0]} outputs")
    folded = copy.deepcopy(module)  # other call sites may share the module's parameters
    with torch.no_grad():
        shape = [-1] + [1] * (module.weight.dim() - 1)
        folded.weight = nn.Parameter(module.weight * gamma.view(shape))
        if module.bias is not None:
            folded.bias = nn.Parameter(module.bias * gamma)
    rw.set_module(layer.target, folded)
    scale.replace_all_uses_with(layer)
    info(layer).origin = info(scale).origin  # the layer now computes the op's value
    rw.stamp(layer)
    rw.erase([scale])
    rw.release_attribute(gamma_node)
    return layer


RULES = [fxq.Rule(fxq.Pattern.chain(conv, "channel_scale", names=("layer", "scale")), fold,
                  "conv -> channel_scale: scale the conv's weights") for conv in _CONVS]


@fxq.register_pass
@dataclass(frozen=True)
class FoldChannelScale(fxq.GraphPass):
    """Fold constant per-channel scales into the conv before them."""

    name = "fold-channel-scale"
    requires = frozenset({"normalized"})
    provides = frozenset({"channel_scale_folded"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: fxq.PassContext) -> GraphModule:
        fxq.Rewriter(gm, self.name).apply(RULES)
        return gm
