"""bias_correction: empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2): move
the expected output error that rounding a layer's weight causes into its bias.

Needs an observed graph whose quantized convs/linears read their input through a calibrated ``ChannelStatistics``
(``record-input-statistics``); runs before ``lower``. For each, the weight is quantized exactly as ``lower`` will
(``fxq.quantize_tensor.quantize_weight``) and E[(W_q - W) x] = (W_q - W) E[x] per output channel (a conv's error
summed over its kernel taps; grouped convs pair each output channel with its group's inputs) is subtracted from
the bias; a layer without one gets one. Transposed convs with a stride above 1 are skipped with the reason (each
output position sees a different subset of taps, so no single bias per channel corrects them). Afterwards the
statistics modules are gone, every corrected node's ``qparams["bias_correction"]`` and history say by how much,
and the float weights are unchanged (``lower`` quantizes them next).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info, stamp
from fxq.backends import get_backend
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import FusedModule
from fxq.pass_registry import register_pass
from fxq.quantize_tensor import quantize_weight
from fxq.rewriter import Declined, Rewriter
from fxq.statistics import ChannelStatistics, drop_statistics

NAME = "bias-correction"
# Functional convs: F.conv2d(input, weight, bias, stride, padding, dilation, groups) and
# F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation); aten's order is the same.
_STRIDE, _GROUPS = 3, 6


@dataclass
class _Layer:
    """What the correction needs from a conv/linear call, whatever its spelling."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int
    transposed: bool
    stride: tuple[int, ...]


def _module_layer(node: Node, module: nn.Module) -> _Layer:
    layer = module.op if isinstance(module, FusedModule) else module
    stride = getattr(layer, "stride", (1,))
    return _Layer(layer.weight, layer.bias, getattr(layer, "groups", 1),
                  info(node).concept.startswith("conv_transpose"), tuple(stride))


def _argument(node: Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _functional_layer(gm: GraphModule, node: Node, weight_arg: int) -> _Layer | Declined:
    weight_node = _argument(node, weight_arg, "weight", None)
    bias_node = _argument(node, weight_arg + 1, "bias", None)
    if not (isinstance(weight_node, Node) and weight_node.op == "get_attr"):
        return Declined(f"weight {weight_node} of {node.name} is computed at run time; lower keeps it float")
    if bias_node is not None and not (isinstance(bias_node, Node) and bias_node.op == "get_attr"):
        return Declined(f"bias {bias_node} of {node.name} is computed at run time; there is no constant to correct")
    bias = attrgetter(bias_node.target)(gm) if bias_node is not None else None
    concept = info(node).concept
    if not concept.startswith("conv"):
        return _Layer(attrgetter(weight_node.target)(gm), bias, 1, False, (1,))
    stride = _argument(node, _STRIDE, "stride", 1)
    return _Layer(attrgetter(weight_node.target)(gm), bias, _argument(node, _GROUPS, "groups", 1),
                  concept.startswith("conv_transpose"), tuple(stride) if isinstance(stride, (list, tuple)) else (stride,))


def expected_error(error: torch.Tensor, mean: torch.Tensor, groups: int, transposed: bool) -> torch.Tensor:
    """E[(W_q - W) x] per output channel for a weight error ``error`` and per-input-channel means ``mean``.

    A conv's output channel o adds, over its kernel taps, the error times its group's input channels; away from
    the borders every tap reads a value with the same mean, so the taps' errors sum first. A transposed conv's
    weight is (inputs, outputs per group, taps...) instead of (outputs, inputs per group, taps...).
    """
    taps = error.flatten(2).sum(2) if error.dim() > 2 else error
    per_group = taps.reshape(groups, taps.shape[0] // groups, taps.shape[1])
    return torch.einsum("gio,gi->go" if transposed else "goi,gi->go", per_group, mean.reshape(groups, -1)).flatten()


def _inputs(layer: _Layer) -> int:
    return layer.weight.shape[0] if layer.transposed else layer.weight.shape[1] * layer.groups


def _correct(rw: Rewriter, node: Node, support, stats: ChannelStatistics) -> Declined | None:
    module = rw.modules[node.target] if node.op == "call_module" else None
    layer = _module_layer(node, module) if module is not None else _functional_layer(rw.gm, node, support.weight_arg)
    if isinstance(layer, Declined):
        return layer
    if layer.transposed and any(s != 1 for s in layer.stride):
        return Declined(f"transposed conv with stride {layer.stride}: each output position sees a different subset "
                        "of the kernel's taps, so no single bias per channel corrects them")
    mean = stats.mean
    if mean.numel() != _inputs(layer):
        return Declined(f"its input statistics have {mean.numel()} channels, its weight reads {_inputs(layer)}")
    weight = layer.weight.detach()
    quantized = quantize_weight(info(node).qconfig, support, weight, node.name)
    error = quantized.qweight.dequantize().double() - weight.double()
    correction = expected_error(error, mean, layer.groups, layer.transposed)
    old = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(correction)
    new_bias = (old - correction).to(weight.dtype)
    if module is not None:
        owner = module.op if isinstance(module, FusedModule) else module
        # A new Parameter: call sites of one module share Parameters (normalize), and each is corrected alone.
        owner.bias = nn.Parameter(new_bias, requires_grad=layer.bias is not None and layer.bias.requires_grad)
    else:
        _replace_functional_bias(rw, node, support.weight_arg, new_bias)
    _record(node, correction, old if layer.bias is not None else None)
    return None


def _replace_functional_bias(rw: Rewriter, node: Node, weight_arg: int, bias: torch.Tensor) -> None:
    """Point this call's bias at a new attribute (another call may read the old one), dropping the old if unread."""
    name = rw.unique_name(f"{node.name}_corrected_bias")
    rw.gm.register_buffer(name, bias)
    attr = rw.insert("get_attr", name, (), before=node, like=node)
    index = weight_arg + 1
    old = _argument(node, index, "bias", None)
    if len(node.args) > index:
        node.update_arg(index, attr)
    elif "bias" in node.kwargs or len(node.args) < index:
        node.update_kwarg("bias", attr)
    else:
        node.args = (*node.args, attr)
    if old is not None:
        rw.release_attribute(old)


def _record(node: Node, correction: torch.Tensor, old_bias: torch.Tensor | None) -> None:
    size = correction.abs()
    summary = {"max_abs": float(size.max()), "mean_abs": float(size.mean())}
    scale = float(old_bias.abs().mean()) if old_bias is not None else 0.0
    relative = f"{summary['mean_abs'] / scale:.3g} of the mean |bias|" if scale > 0 else "the layer had no bias"
    info(node).qparams["bias_correction"] = summary
    stamp(node, NAME, f"bias -= (W_q - W) E[x]: max |correction| {summary['max_abs']:.3g}, mean "
                      f"{summary['mean_abs']:.3g} ({relative})")


@register_pass
@dataclass(frozen=True)
class BiasCorrection(GraphPass):
    """Subtract each quantized conv/linear's expected weight-rounding error from its bias (see module docstring)."""

    name = NAME
    requires = frozenset({"observed"})
    provides = frozenset({"bias_corrected"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        backend = get_backend(ctx.backend)
        rw = Rewriter(gm, self.name)
        for node in list(gm.graph.nodes):
            name = info(node).statistics.get("input0")
            if name is None:
                continue
            stats = rw.modules[name]
            if not stats.has_data:  # a dynamic layer nobody calibrated; a static one's observer reports it
                info(node).declined.append((NAME, "no calibration data reached its input"))
                continue
            outcome = _correct(rw, node, backend.support(info(node).concept), stats)
            if isinstance(outcome, Declined):
                info(node).declined.append((NAME, outcome.reason))
        drop_statistics(rw)
        return gm
