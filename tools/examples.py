"""Small models with a known quantization problem, for the inspection guide (docs/inspect.md) and for trying
``fxq dump`` on something that goes wrong.

``outlier_net``: a few layers where one hidden channel carries values ~100x larger than the rest, as some
transformer channels do. Quantized per tensor, that channel sets the scale of the whole tensor and the other
channels keep only a few steps: the layer producing it is where accuracy goes.
"""

from __future__ import annotations

import torch
from torch import nn


class OutlierNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(32, 64)
        self.mix = nn.Linear(64, 64)
        self.act = nn.ReLU()
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.act(self.mix(self.embed(x))))


def outlier_net() -> nn.Module:
    """OutlierNet with fixed weights; ``mix`` writes channel 7 about 100x larger than the others."""
    generator = torch.Generator().manual_seed(0)
    model = OutlierNet()
    with torch.no_grad():
        for layer in (model.embed, model.mix, model.head):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / layer.in_features ** 0.5)
            layer.bias.zero_()
        model.mix.weight[7] *= 100.0
        model.head.weight[:, 7] /= 100.0  # the head undoes it, so the float model's outputs stay ordinary
    return model.eval()
