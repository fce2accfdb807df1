"""Models the tests define themselves, with representative data for each.

Each is small enough to run in milliseconds on CPU and exercises one family of patterns: an MLP; a ResNet-style
net (conv-bn-relu, residual add, maxpool, adaptive avgpool, flatten, linear); a MobileNetV2-style net (depthwise
conv, relu6, inverted residual); a transformer encoder block (linear, layernorm, softmax attention, gelu,
residual add); a model mixing functional, method, module and in-place forms; and a model with an untraceable
submodule. CNNs get real BatchNorm statistics from a few train-mode batches, or int8 outputs are degenerate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fxq.tools.bench_models import BasicBlock
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 64), nn.Linear(64, 10)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class ResNetish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
            InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 2, 4), InvertedResidual(24, 24, 1, 4),
            nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TransformerBlock(nn.Module):
    def __init__(self, dim=64, heads=4, hidden=128):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def _split(self, t, batch, tokens):
        return t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q = self._split(self.q(x), batch, tokens)
        k = self._split(self.k(x), batch, tokens)
        v = self._split(self.v(x), batch, tokens)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dim // self.heads)
        attn = torch.matmul(F.softmax(scores, dim=-1), v)
        attn = attn.transpose(1, 2).reshape(batch, tokens, dim)
        x = self.norm1(x + self.proj(attn))
        return self.norm2(x + self.ff2(self.act(self.ff1(x))))


class MixedForms(nn.Module):
    """The same ops in functional, method, module and in-place forms."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu_inplace = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.weight = nn.Parameter(torch.randn(16, 8 * 8 * 8) * 0.05)
        self.bias = nn.Parameter(torch.zeros(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = self.relu_inplace(self.conv(x))
        b = F.max_pool2d(a, 2)
        c = self.pool(a).relu()
        d = torch.relu(b) + c
        d += F.relu(b, inplace=True)
        e = torch.cat([d, torch.add(b, c)], dim=1)
        e = e.mean(dim=1, keepdim=True).expand(-1, 8, -1, -1) + e[:, :8]
        flat = torch.flatten(e, 1)
        h = F.linear(flat.view(flat.shape[0], -1), self.weight, self.bias)
        return self.fc(torch.sigmoid(h) * h)


class DataDependentGate(nn.Module):
    """Branches on a tensor value: symbolic tracing cannot follow this."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        if x.sum() > 0:
            return x * self.scale
        return x


class WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 32)
        self.gate = DataDependentGate()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.gate(self.fc1(x))))


_SHAPES = {
    "mlp": (64,),
    "resnet": (3, 32, 32),
    "mobilenet": (3, 32, 32),
    "transformer": (16, 64),
    "mixed": (3, 16, 16),
    "untraceable": (32,),
}
_CLASSES = {"mlp": MLP, "resnet": ResNetish, "mobilenet": MobileNetV2ish, "transformer": TransformerBlock,
            "mixed": MixedForms, "untraceable": WithUntraceable}
MODEL_NAMES = list(_CLASSES)


class SquaredTail(nn.Module):
    """A fuzzed model (seed 2909, shrunk): x * conv(x) * x has a long tail that a histogram observer clips as
    cheap for that value alone, and elu(v) * v then squares exactly that tail."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3434)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.elu = nn.ELU()

    def forward(self, x):
        v = self.conv(x)
        v = torch.cat((v, x * v * x), dim=1)
        return self.elu(v) * v


def _data(name: str, batch: int, seed: int) -> torch.Tensor:
    """Representative inputs: images with per-channel offsets and smooth structure; N(0, 1) features/tokens."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *_SHAPES[name])
    if len(shape) == 4:
        base = torch.randn(shape, generator=g)
        smooth = F.avg_pool2d(base, 3, 1, 1) * 2
        offsets = torch.linspace(-0.5, 0.5, shape[1]).reshape(1, -1, 1, 1)
        return smooth + offsets
    return torch.randn(shape, generator=g)


def warm_up_bn(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Give BatchNorm layers real running statistics (a few train-mode passes), then return the eval model."""
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _CLASSES[name]()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        warm_up_bn(model, [_data(name, 16, 100 + i) for i in range(4)])
    return model.eval()


def example_inputs(name: str, batch: int = 2, seed: int = 0) -> tuple:
    return (_data(name, batch, seed),)


def calibration_batches(name: str, n: int = 8, batch: int = 8, seed: int = 1) -> list[tuple]:
    return [(_data(name, batch, seed * 1000 + i),) for i in range(n)]


def eval_batches(name: str, n: int = 4, batch: int = 8, seed: int = 2) -> list[tuple]:
    return calibration_batches(name, n, batch, seed)


def sqnr(reference, test) -> float:
    """Signal-to-quantization-noise ratio in dB, over all tensors of (possibly nested) outputs."""
    ref, out = _flat(reference), _flat(test)
    signal = sum(float(r.float().pow(2).sum()) for r in ref)
    noise = sum(float((r.float() - o.float()).pow(2).sum()) for r, o in zip(ref, out, strict=True))
    return float("inf") if noise == 0 else 10 * math.log10(signal / noise)


def _flat(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flat(item)]
