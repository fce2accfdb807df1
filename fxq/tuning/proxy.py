"""The metric ``fxq.tune`` uses when the user gives none: how close a model's outputs stay to the float model's
on batches calibration did not see, as the mean cosine similarity per sample (1.0 for the float model itself).

Cosine rather than SQNR: it reads the same on every model (a classifier's logits, an encoder's hidden states),
so one default budget (``max_drop=0.01``: cosine >= 0.99) means the same thing everywhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree

from fxq.errors import ConfigError

NAME = "proxy: mean output cosine vs float on held-out batches"


class OutputCosine:
    """``metric(model)``: the mean, over held-out samples, of the cosine between its outputs and the float
    model's (every float output tensor, flattened per sample)."""

    def __init__(self, float_model: nn.Module, batches: list[tuple]) -> None:
        if not batches:
            raise ConfigError("the built-in tuning metric needs held-out batches; pass at least 2 calibration "
                              "batches (a quarter is held out), or pass evaluate=")
        self.batches = batches
        with torch.no_grad():
            self.expected = [_samples(float_model(*batch)) for batch in batches]

    def __call__(self, model: nn.Module) -> float:
        cosines = []
        with torch.no_grad():
            for batch, expected in zip(self.batches, self.expected, strict=True):
                got = _samples(model(*batch))
                cosines.append(torch.nn.functional.cosine_similarity(expected, got, dim=1, eps=1e-12))
        return float(torch.cat(cosines).mean())


def _samples(output) -> torch.Tensor:
    """Every float tensor of ``output`` flattened per sample (dim 0) and joined: one row per sample."""
    leaves = [leaf for leaf in _pytree.tree_leaves(output) if isinstance(leaf, torch.Tensor)]
    leaves = [leaf.dequantize() if leaf.is_quantized else leaf for leaf in leaves]
    floats = [leaf.double() for leaf in leaves if leaf.is_floating_point() and leaf.dim() > 0]
    if not floats:
        raise ConfigError("the built-in tuning metric compares float tensor outputs, and the model returned none; "
                          "pass evaluate=(model -> score)")
    rows = floats[0].shape[0]
    return torch.cat([leaf.reshape(rows, -1) if leaf.shape[0] == rows else leaf.reshape(1, -1).expand(rows, -1)
                      for leaf in floats], dim=1)
