"""Linear and convolution layers that train through their weight's fake quantization.

Each is its float layer's subclass with a ``weight_fake_quant`` applied to the weight in ``forward``, so every
other reader (the concept table via ``fxq_concept``, ``state_dict``, optimizers) sees the layer it was. They are
plain classes (not parametrizations, not hooks) so a prepared model pickles and deep-copies. ``to_float`` turns
one back into its float layer, holding the trained parameters, for ``convert``.

``QATLayerBn`` trains a conv or linear with its batch norm: the converted model folds the norm's running
statistics into the layer's weight and rounds *that*, so training rounds the same folded weight, then undoes
the fold's scale on the layer's output and lets the batch norm normalise it with the batch's statistics (and
update its running ones). With the norm's statistics frozen (``freeze_bn_stats``) this computes exactly the
folded layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn.fold import fold_batch_norm
from fxq.nn.fused import LAYER_BN, FusedModule, fused_with_relu
from fxq.qat.batch_norm import FLOAT_BATCH_NORM
from fxq.qat.fake_quantize import WeightFakeQuantize
from fxq.qat.retype import retyped


class QATLinear(nn.Linear):
    fxq_concept = "linear"

    def forward(self, x):
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)


class _RoundsConvWeight:
    """The forward every QAT convolution shares: its own convolution on the rounded weight."""

    def forward(self, x):
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


class QATConv1d(_RoundsConvWeight, nn.Conv1d):
    fxq_concept = "conv1d"


class QATConv2d(_RoundsConvWeight, nn.Conv2d):
    fxq_concept = "conv2d"


class QATConv3d(_RoundsConvWeight, nn.Conv3d):
    fxq_concept = "conv3d"


class QATLayerBn(nn.Module):
    """A ``LinearBn``/``ConvBn`` unit (with or without its ReLU) in training (see the module docstring)."""

    _fxq_leaf = True

    def __init__(self, unit: FusedModule, weight_fake_quant: WeightFakeQuantize) -> None:
        super().__init__()
        self.layer, self.bn = unit[0], unit[1]
        self.relu = unit[2] if len(unit) > 2 else None
        self.weight_fake_quant = weight_fake_quant
        self.fxq_concept = unit.fxq_concept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self._fold_factor()
        fold = factor.reshape([-1] + [1] * (self.layer.weight.dim() - 1))
        weight = self.weight_fake_quant(self.layer.weight * fold)
        if isinstance(self.layer, nn.Linear):
            y = F.linear(x, weight)
        else:
            y = self.layer._conv_forward(x, weight, None)
        channel = [1, -1] + [1] * (y.dim() - 2)
        y = y / factor.reshape(channel)
        if self.layer.bias is not None:
            y = y + self.layer.bias.reshape(channel)
        y = self.bn(y)
        return self.relu(y) if self.relu is not None else y

    def _fold_factor(self) -> torch.Tensor:
        """gamma / running std, as ``fold_batch_norm`` computes it (so the weights rounded are the same)."""
        inv_std = torch.rsqrt(self.bn.running_var + self.bn.eps)
        return self.bn.weight * inv_std if self.bn.affine else inv_std

    def folded(self) -> nn.Module:
        """The layer with the norm's running statistics folded in (and its ReLU): what ``convert`` lowers."""
        layer = fold_batch_norm(self.layer, self.bn)
        if self.relu is None:
            return layer
        return fused_with_relu(layer)(layer, self.relu)


_QAT = {nn.Linear: QATLinear, nn.Conv1d: QATConv1d, nn.Conv2d: QATConv2d, nn.Conv3d: QATConv3d}
_FLOAT = {qat: float_type for float_type, qat in _QAT.items()}


def has_qat_form(module: nn.Module) -> bool:
    return type(module) in _QAT or isinstance(module, LAYER_BN)


def to_qat(layer: nn.Module, weight_fake_quant: WeightFakeQuantize) -> nn.Module:
    """``layer``'s QAT form, sharing its parameters and buffers (``layer`` is the prepared copy's, never the
    user's)."""
    if isinstance(layer, LAYER_BN):
        return QATLayerBn(layer, weight_fake_quant)
    qat = retyped(layer, _QAT[type(layer)])
    qat.weight_fake_quant = weight_fake_quant
    return qat


def to_float(layer: nn.Module) -> nn.Module:
    """The float layer a QAT layer trains, with its current parameters (a layer's batch norm folded in; a lone
    batch norm its float class again)."""
    if isinstance(layer, QATLayerBn):
        return layer.folded()
    if type(layer) in FLOAT_BATCH_NORM:
        plain = retyped(layer, FLOAT_BATCH_NORM[type(layer)])
        del plain._buffers["stats_frozen"]
        return plain
    plain = retyped(layer, _FLOAT[type(layer)])
    del plain._modules["weight_fake_quant"]
    return plain


def is_qat(module: nn.Module) -> bool:
    return type(module) in _FLOAT or type(module) in FLOAT_BATCH_NORM or isinstance(module, QATLayerBn)
