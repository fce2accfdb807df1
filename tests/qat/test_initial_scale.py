"""A learned activation scale starts at the least-error range of the first batch: narrower than min/max on a
tailed distribution, never worse than any range it could have chosen, and the observer's own range when the data
has no tail to clip."""

import torch

from fxq.observers import MinMaxObserver
from fxq.qat import FakeQuantize
from fxq.qat.initial_scale import least_error_qparams


def _error(x, scale, zero_point, low=0, high=255):
    return float((torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), low, high) - x)
                 .square().mean())


def _tailed(n=20000):
    torch.manual_seed(0)
    return torch.relu(torch.randn(n)) * torch.where(torch.rand(n) < 0.002, 20.0, 1.0)


def test_a_tail_is_clipped_and_the_error_beats_min_max_and_nearby_ranges():
    x = _tailed()
    observer = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=15)
    observer(x)
    full_scale, full_zero = observer.calculate_qparams()
    scale, zero_point = least_error_qparams(observer, x)
    assert float(scale) < 0.5 * float(full_scale)
    best = _error(x, scale, zero_point, 0, 15)
    assert best < _error(x, full_scale, full_zero, 0, 15)
    for factor in (0.7, 0.9, 1.1, 1.3):  # its neighbours, computed here with torch's own fake quantize
        assert best <= _error(x, float(scale) * factor, zero_point, 0, 15) + 1e-9


def test_uniform_data_keeps_its_whole_range():
    x = torch.linspace(0, 3, 4096)
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(x)
    scale, _ = least_error_qparams(observer, x)
    assert torch.allclose(scale, observer.calculate_qparams()[0], rtol=1e-3)


def test_a_fake_quantizer_learns_from_that_start_and_only_observes_once():
    x = _tailed()
    fake = FakeQuantize(MinMaxObserver(dtype=torch.quint8))
    fake.train()
    fake(x)
    start = fake.scale.detach().clone()
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(x)
    assert torch.allclose(start, least_error_qparams(observer, x)[0])
    fake(x * 5)  # later batches leave the scale to training
    assert torch.equal(fake.scale.detach(), start)
    assert isinstance(fake.scale, torch.nn.Parameter)
