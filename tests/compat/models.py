"""The shapes of torch.ao tutorials' models: an eager-mode CNN with QuantStub/DeQuantStub, and a plain one."""

import torch
from torch import nn

from fxq.compat import DeQuantStub, QuantStub


class StubbedCNN(nn.Module):
    """conv + batch norm + ReLU, pool, linear between a QuantStub and a DeQuantStub (the eager-mode tutorial)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.relu(self.bn(self.conv(self.quant(x))))
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))


class PlainCNN(nn.Module):
    """The FX tutorial's kind of model: no stubs, a conv block, a residual add and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.relu1(self.conv1(x))
        y = y + self.conv2(y)
        return self.fc(torch.flatten(self.pool(y), 1))


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with seeded weights and batch-norm statistics warmed on random images, in eval mode."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=0.2)
            if module.bias is not None:  # seeded too: the default init drew them from the unseeded generator
                nn.init.normal_(module.bias, std=0.05)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(images(8, seed + 100))
    return model.eval()


def images(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
