"""Folding an eval-mode BatchNorm into the conv or linear before it: the pair becomes one layer computing the
same function, so quantization sees (and rounds) one weight instead of two ops."""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batch_norm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``layer`` (Conv1d/2d/3d or Linear) with ``bn``'s running statistics and affine folded in."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm has no running statistics (track_running_stats=False)")
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(inv_std)
        beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
        factor = gamma * inv_std
        shape = [-1] + [1] * (folded.weight.dim() - 1)
        folded.weight.copy_(folded.weight * factor.reshape(shape))
        bias = folded.bias if folded.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * factor + beta
        folded.bias = nn.Parameter(new_bias.detach().clone())
    return folded
