"""Batch norms in a QAT model: their float classes, plus statistics that stay frozen once frozen.

``freeze_bn_stats`` is the usual late step of a QAT schedule: from then on a norm normalises with its running
statistics and stops updating them, so training sees what the converted (folded) model computes. A flag set with
``module.eval()`` would not last, since every training loop calls ``model.train()`` each epoch; this one is a
buffer, so it survives ``train()``, deep copies, pickling and ``state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxq.qat.retype import retyped


class FreezableBatchNorm:
    """The forward every QAT batch norm shares: its float class's, or eval-mode normalisation once frozen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.stats_frozen):
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class QATBatchNorm1d(FreezableBatchNorm, nn.BatchNorm1d):
    pass


class QATBatchNorm2d(FreezableBatchNorm, nn.BatchNorm2d):
    pass


class QATBatchNorm3d(FreezableBatchNorm, nn.BatchNorm3d):
    pass


QAT_BATCH_NORM = {nn.BatchNorm1d: QATBatchNorm1d, nn.BatchNorm2d: QATBatchNorm2d, nn.BatchNorm3d: QATBatchNorm3d}
FLOAT_BATCH_NORM = {qat: float_type for float_type, qat in QAT_BATCH_NORM.items()}


def freezable(bn: nn.Module) -> nn.Module:
    """``bn``'s QAT form sharing its parameters and buffers, statistics not frozen (``bn`` has running ones)."""
    made = retyped(bn, QAT_BATCH_NORM[type(bn)])
    made.register_buffer("stats_frozen", torch.tensor(False))
    return made
