"""``fxq demo``: train a small CNN on scikit-learn's bundled digits, quantize it with fxq end to end, and print
what was gained (size) and lost (accuracy, SQNR), with every node's decision before and after conversion."""

from __future__ import annotations

import time
from functools import partial

import torch
from tabulate import tabulate
from torch import nn

import fxq
from fxq.dump import inspect
from fxq.dump.text import render_rows
from fxq.metrics import sqnr_db
from fxq.report import serialized_size
from fxq.shapes import record_values
from fxq.timing import time_interleaved


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, maxpool, flatten, linear-relu, linear: small, but it exercises every static pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def load_digits_tensors(seed: int = 0):
    """Digits as (train_x, train_y, test_x, test_y): 8x8 images scaled to [0, 1], a fixed 75/25 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise fxq.FxqError("fxq demo needs scikit-learn: pip install 'fxq[demo]'") from err
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.75 * len(x))
    train, test = order[:split], order[split:]
    return x[train], y[train], x[test], y[test]


def train_digits_cnn(train_x, train_y, epochs: int = 8, seed: int = 0) -> DigitsCNN:
    """A float DigitsCNN trained with Adam; returns it in eval mode."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(train_x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def run_demo(epochs: int = 8, seed: int = 0) -> int:
    train_x, train_y, test_x, test_y = load_digits_tensors(seed)
    start = time.perf_counter()
    model = train_digits_cnn(train_x, train_y, epochs, seed)
    print(f"trained DigitsCNN on {len(train_x)} digits in {time.perf_counter() - start:.1f} s")

    mapping = fxq.get_default_qconfig_mapping("x86")
    start = time.perf_counter()
    prepared = fxq.prepare(model, mapping, (test_x[:1],), backend="x86")
    for batch in train_x.split(128)[:8]:
        prepared(batch)
    quantized = fxq.convert(prepared)
    print(f"prepare + calibrate (8 batches) + convert: {time.perf_counter() - start:.2f} s\n")

    print("Decisions after prepare (what was fused, which rule chose the qconfig, what is observed):")
    print(render_rows(inspect(prepared)))
    print("\nDecisions after convert (x86 backend: int8 kernels, quantized tensors flowing between them):")
    print(render_rows(inspect(quantized, values=record_values(quantized, (test_x[:1],)))))

    with torch.no_grad():
        float_logits, quant_logits = model(test_x), quantized(test_x)
    float_acc, quant_acc = accuracy(model, test_x, test_y), accuracy(quantized, test_x, test_y)
    float_size, quant_size = serialized_size(model), serialized_size(quantized)
    timed = time_interleaved({"float": partial(model, test_x), "int8": partial(quantized, test_x)}, rounds=20,
                             warmup=3)
    float_ms, quant_ms = timed["float"], timed["int8"]
    summary = [
        [f"latency, {len(test_x)} images (ms, median)", f"{float_ms:.3f}", f"{quant_ms:.3f}", f"{quant_ms / float_ms:.2f}x"],
        ["top-1 accuracy (%)", f"{float_acc:.2f}", f"{quant_acc:.2f}", f"{quant_acc - float_acc:+.2f} points"],
        ["serialized size (bytes)", float_size, quant_size, f"{quant_size / float_size:.2f}x"],
        ["logits SQNR vs float (dB)", "", f"{sqnr_db(float_logits, quant_logits):.1f}", ""],
    ]
    print(f"\nOn {len(test_x)} held-out digits:")
    print(tabulate(summary, headers=["", "float", "int8 (x86)", "change"]))
    return 0

