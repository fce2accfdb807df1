"""Fused float units: an op and the activation after it, kept together so one quantized kernel can replace both.

Fusion swaps a ``conv -> relu`` pair of modules for one of these; they compute exactly what the pair computed,
are leaves to the tracer, and tell later passes (through their ``fxq_concept``) which quantized op they become.
"""

from __future__ import annotations

from torch import nn


class FusedModule(nn.Sequential):
    """Base of fused units: children run in order; ``fxq_concept`` names the combined op for patterns and backends."""

    fxq_concept: str = ""
    _fxq_leaf = True

    @property
    def op(self) -> nn.Module:
        """The weighted (or first) member, whose parameters lowering quantizes."""
        return self[0]


class LinearReLU(FusedModule):
    """Linear followed by ReLU."""

    fxq_concept = "linear_relu"


class ConvReLU1d(FusedModule):
    """Conv1d followed by ReLU."""

    fxq_concept = "conv1d_relu"


class ConvReLU2d(FusedModule):
    """Conv2d followed by ReLU."""

    fxq_concept = "conv2d_relu"


class ConvReLU3d(FusedModule):
    """Conv3d followed by ReLU."""

    fxq_concept = "conv3d_relu"


class BNReLU2d(FusedModule):
    """BatchNorm2d followed by ReLU (when no conv precedes the batch norm)."""

    fxq_concept = "batch_norm_relu"


class BNReLU3d(FusedModule):
    """BatchNorm3d followed by ReLU (when no conv precedes the batch norm)."""

    fxq_concept = "batch_norm_relu"


class LinearBn1d(FusedModule):
    """Linear followed by BatchNorm1d, kept apart for quantization-aware training (folded at convert)."""

    fxq_concept = "linear"


class LinearBnReLU1d(FusedModule):
    """Linear, BatchNorm1d, ReLU, for quantization-aware training."""

    fxq_concept = "linear_relu"


class ConvBn1d(FusedModule):
    """Conv1d followed by BatchNorm1d, kept apart for quantization-aware training (folded at convert)."""

    fxq_concept = "conv1d"


class ConvBn2d(FusedModule):
    """Conv2d followed by BatchNorm2d, kept apart for quantization-aware training (folded at convert)."""

    fxq_concept = "conv2d"


class ConvBn3d(FusedModule):
    """Conv3d followed by BatchNorm3d, kept apart for quantization-aware training (folded at convert)."""

    fxq_concept = "conv3d"


class ConvBnReLU1d(FusedModule):
    """Conv1d, BatchNorm1d, ReLU, for quantization-aware training."""

    fxq_concept = "conv1d_relu"


class ConvBnReLU2d(FusedModule):
    """Conv2d, BatchNorm2d, ReLU, for quantization-aware training."""

    fxq_concept = "conv2d_relu"


class ConvBnReLU3d(FusedModule):
    """Conv3d, BatchNorm3d, ReLU, for quantization-aware training."""

    fxq_concept = "conv3d_relu"


LAYER_BN = (LinearBn1d, LinearBnReLU1d, ConvBn1d, ConvBn2d, ConvBn3d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d)


def layer_bn_unit(layer: nn.Module, bn: nn.Module, relu: nn.Module | None = None) -> FusedModule:
    """The fused linear/conv + batch norm (+ ReLU) unit for ``layer``'s type."""
    kind = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d).index(type(layer))
    if relu is None:
        return (LinearBn1d, ConvBn1d, ConvBn2d, ConvBn3d)[kind](layer, bn)
    return (LinearBnReLU1d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d)[kind](layer, bn, relu)


def fused_with_relu(module: nn.Module) -> type[FusedModule] | None:
    """The fused class for ``module`` followed by a ReLU, or None if that pair has no fused form."""
    return _WITH_RELU.get(type(module))


_WITH_RELU: dict[type, type[FusedModule]] = {
    nn.Linear: LinearReLU,
    nn.Conv1d: ConvReLU1d,
    nn.Conv2d: ConvReLU2d,
    nn.Conv3d: ConvReLU3d,
    nn.BatchNorm2d: BNReLU2d,
    nn.BatchNorm3d: BNReLU3d,
}
