"""Kernels torch computes wrongly for some shapes, and the routes around them, checked over shape grids against the
float computation on the same int8 values (at most 2 output steps apart; the kernels round in between)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from fxq.nn.quantized import QuantizedConv
from fxq.nn.quantized.engine import using_engine
from fxq.nn.quantized.group_norm import group_norm


def _int8(x: torch.Tensor, scale: float = 0.03, zero_point: int = 128) -> torch.Tensor:
    return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)


def _steps_apart(expected: torch.Tensor, got: torch.Tensor, scale: float) -> float:
    return float((expected - got.dequantize()).abs().max() / scale)


TRANSPOSED = list(itertools.product((1, 2, 3), (8, 16, 5), (8, 16), (2, 3), (1, 2), (1, 3)))


@pytest.mark.parametrize("engine", ("x86", "qnnpack"))
def test_transposed_convolutions_match_float_for_every_shape(engine):
    g = torch.Generator().manual_seed(0)
    failures = []
    with using_engine(engine):
        for dims, cin, cout, kernel, stride, batch in TRANSPOSED:
            if engine == "qnnpack" and dims == 3:
                continue  # qnnpack has no 3-d convolutions (its backend table keeps them float)
            x = _int8(torch.randn(batch, cin, *(4,) * dims, generator=g))
            w = torch.randn(cin, cout, *(kernel,) * dims, generator=g) * 0.2
            qw = torch.quantize_per_tensor(w, float(w.abs().max()) / 63, 0, torch.qint8)
            bias = torch.randn(cout, generator=g)
            conv = getattr(F, f"conv_transpose{dims}d")
            expected = conv(x.dequantize(), qw.dequantize(), bias, stride)
            scale = float(expected.abs().max()) / 127
            module = QuantizedConv(qw, bias, scale, 128, False, stride, 0, 1, 1, transposed=True)
            first, second = module(x), module(x)
            steps = _steps_apart(expected, first, scale)
            if steps > 2 or not torch.equal(first.int_repr(), second.int_repr()):
                failures.append((dims, cin, cout, kernel, stride, batch, round(steps)))
    assert not failures, f"(dims, in, out, kernel, stride, batch, steps off): {failures}"


@pytest.mark.parametrize("engine", ("x86", "qnnpack"))
def test_group_norm_matches_float_for_every_shape(engine):
    g = torch.Generator().manual_seed(0)
    failures = []
    with using_engine(engine):
        for batch, (channels, groups), spatial in itertools.product(
                (2, 4), ((16, 8), (16, 16), (8, 4), (32, 8)), ((1, 1), (1, 2), (3, 3), (1,), (5,))):
            x = _int8(torch.randn(batch, channels, *spatial, generator=g) * 2 + 1, 0.05, 100)
            weight, bias = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
            expected = F.group_norm(x.dequantize(), groups, weight, bias, 1e-5)
            scale = float(expected.max() - expected.min()) / 255
            zero_point = int(-float(expected.min()) / scale)
            got = group_norm(x, groups, weight, bias, 1e-5, scale, zero_point)
            assert got.shape == x.shape
            steps = _steps_apart(expected, got, scale)
            if steps > 2:
                failures.append((batch, channels, groups, spatial, round(steps)))
    assert not failures, f"(batch, channels, groups, spatial, steps off): {failures}"
