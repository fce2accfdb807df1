"""GPTQ rounding of weight-only Linears: lower output error than nearest rounding where inputs are correlated,
dead inputs get zero weight, and quantize_dynamic uses it when given calibration data."""

import pytest
import torch
from torch import nn

import fxq
from fxq.errors import CalibrationError
from fxq.gptq import gptq_levels
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear, least_error_scales


def _correlated_inputs(rows=2048, width=128, seed=0):
    """Samples (seeded) of one fixed distribution whose input channels are correlated and unequal."""
    mixing = torch.randn(width, width, generator=torch.Generator().manual_seed(1234)) / width ** 0.5
    samples = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    return samples @ (mixing + torch.eye(width)) * torch.linspace(0.2, 3.0, width)


def _output_error(layer, quantized, x):
    with torch.no_grad():
        return float((layer(x) - quantized(x)).square().mean())


@pytest.mark.parametrize("bits, group", [(4, 32), (4, 128), (8, 64)])
def test_gptq_rounding_has_less_output_error_than_nearest_on_held_out_inputs(bits, group):
    torch.manual_seed(0)
    layer = nn.Linear(128, 64)
    calibration, held_out = _correlated_inputs(seed=0), _correlated_inputs(seed=1)
    moments = calibration.t().double() @ calibration.double() / len(calibration)
    nearest = WeightOnlyLinear(layer, bits, group)
    gptq = WeightOnlyLinear(layer, bits, group, input_moments=moments)
    assert _output_error(layer, gptq, held_out) < 0.8 * _output_error(layer, nearest, held_out)


def test_inputs_that_never_vary_get_zero_weight():
    weight = torch.randn(8, 64)
    moments = torch.eye(64, dtype=torch.float64)
    moments[5, 5] = 0.0
    scales = least_error_scales(weight.reshape(8, 2, 32), 7).squeeze(2)
    levels = gptq_levels(weight, moments, scales, 4, 32)
    assert levels.shape == (8, 64)
    assert torch.all(levels[:, 5] == 0) and levels.abs().sum() > 0


def test_quantize_dynamic_rounds_weight_only_linears_to_the_calibration_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 32)).eval()
    batches = [(_correlated_inputs(256, seed=seed),) for seed in range(4)]
    held_out = _correlated_inputs(512, seed=9)
    spec = {nn.Linear: fxq.WeightOnly(4, 32)}
    nearest = fxq.quantize_dynamic(model, spec)
    calibrated = fxq.quantize_dynamic(model, spec, calibration_data=batches)
    assert not torch.equal(nearest[0].stored_qweight(), calibrated[0].stored_qweight())
    assert _output_error(model, calibrated, held_out) < _output_error(model, nearest, held_out)
    with pytest.raises(CalibrationError, match="no batches"):
        fxq.quantize_dynamic(model, spec, calibration_data=[])
