"""A small model that uses what the plugin adds: the custom scale op after convs, and a ReLU spelled clamp."""

from __future__ import annotations

import torch
from torch import nn

from fxq_plugin_example import ops  # noqa: F401 - registers torch.ops.fxq_example.channel_scale


class ScaledConvNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.gamma1, self.gamma2 = nn.Parameter(torch.rand(16) + 0.5), nn.Parameter(torch.rand(32) + 0.5)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, classes)

    def forward(self, x):
        x = torch.clamp(torch.ops.fxq_example.channel_scale(self.conv1(x), self.gamma1), min=0)
        x = torch.relu(torch.ops.fxq_example.channel_scale(self.conv2(x), self.gamma2))
        return self.fc(torch.flatten(self.pool(x), 1))


def scaled_conv_net() -> nn.Module:
    """The factory ``fxq dump fxq_plugin_example.models:scaled_conv_net`` calls."""
    torch.manual_seed(0)
    return ScaledConvNet().eval()
