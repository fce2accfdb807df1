"""Linear and convolution layers that train through their weight's fake quantization.

Each is its float layer's subclass with a ``weight_fake_quant`` applied to the weight in ``forward``, so every
other reader (the concept table via ``fxq_concept``, ``state_dict``, optimizers) sees the layer it was. They are
plain classes (not parametrizations, not hooks) so a prepared model pickles and deep-copies. ``to_float`` turns
one back into its float layer, holding the trained parameters, for ``convert``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from fxq.qat.fake_quantize import WeightFakeQuantize


class QATLinear(nn.Linear):
    fxq_concept = "linear"

    def forward(self, x):
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)


class QATConv1d(nn.Conv1d):
    fxq_concept = "conv1d"

    def forward(self, x):
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


class QATConv2d(nn.Conv2d):
    fxq_concept = "conv2d"

    def forward(self, x):
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


class QATConv3d(nn.Conv3d):
    fxq_concept = "conv3d"

    def forward(self, x):
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


_QAT = {nn.Linear: QATLinear, nn.Conv1d: QATConv1d, nn.Conv2d: QATConv2d, nn.Conv3d: QATConv3d}
_FLOAT = {qat: float_type for float_type, qat in _QAT.items()}


def has_qat_form(module: nn.Module) -> bool:
    return type(module) in _QAT


def to_qat(layer: nn.Module, weight_fake_quant: WeightFakeQuantize) -> nn.Module:
    """``layer``'s QAT form, sharing its parameters and buffers (``layer`` is the prepared copy's, never the
    user's)."""
    qat = _retyped(layer, _QAT[type(layer)])
    qat.weight_fake_quant = weight_fake_quant
    return qat


def to_float(layer: nn.Module) -> nn.Module:
    """The float layer a QAT layer trains, with its current parameters."""
    plain = _retyped(layer, _FLOAT[type(layer)])
    del plain._modules["weight_fake_quant"]
    return plain


def is_qat(module: nn.Module) -> bool:
    return type(module) in _FLOAT


def _retyped(layer: nn.Module, cls: type) -> nn.Module:
    """A new ``cls`` object holding ``layer``'s state (parameters, buffers, settings), without re-initialising."""
    made = cls.__new__(cls)
    made.__dict__.update(layer.__dict__)
    made._parameters, made._buffers, made._modules = dict(layer._parameters), dict(layer._buffers), \
        dict(layer._modules)
    return made
