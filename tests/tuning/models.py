"""Models whose tuning outcome is known in advance: a layer too small for int8 to pay, a layer int8 cannot
represent well, and a layer big enough for int8 to win."""

import torch
from torch import nn

import fxq


class TinyHead(nn.Module):
    """A real-sized layer, then a 4x4 Linear between float ops: at batch 1 its quantize and dequantize cost more
    than the 16 multiplies int8 saves."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(512, 512)
        self.tiny = nn.Linear(4, 4)

    def forward(self, x):
        x = torch.tanh(self.big(x))
        return torch.tanh(self.tiny(x[:, :4]))


class OneOutlier(nn.Module):
    """fc2's input has one channel ~1000x the others, which fc2 ignores: the per-tensor int8 scale of its input
    leaves the channels it reads a step or two, while fc1 and fc3 see ordinary ranges."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 16)
        with torch.no_grad():
            self.fc1.weight[0].mul_(1000.0)
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] = 0.0

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def batches(features: int, n: int, batch: int = 16, seed: int = 0) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=generator),) for _ in range(n)]


def prepared_and_converted(model: nn.Module, example: tuple, calibration: list[tuple]):
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), example, backend="x86")
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return prepared, fxq.convert(prepared, runtime="graph")


class TinyTail(nn.Module):
    """TinyHead with six 4x4 Linears in a row: each costs a quantize and a dequantize in int8, so with all of them
    float the whole model is clearly faster too, not by a margin a loaded machine can hide."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(512, 512)
        self.tiny = nn.ModuleList(nn.Linear(4, 4) for _ in range(6))

    def forward(self, x):
        x = torch.tanh(self.big(x))[:, :4]
        for layer in self.tiny:
            x = torch.tanh(layer(x))
        return x
