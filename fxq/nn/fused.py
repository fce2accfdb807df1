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
