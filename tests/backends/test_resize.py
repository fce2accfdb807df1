"""Resizes (``F.interpolate``, ``nn.Upsample`` and their aten forms) run on int8 tensors where torch has the
kernel, stay float islands where it does not, and keep a U-Net-style decoder on the TorchScript runtime."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.annotation import info
from fxq.errors import FxqWarning
from fxq.metrics import sqnr_db


class _Decoder(nn.Module):
    """Two resolutions joined after a resize, as in U-Net and FPN decoders."""

    def __init__(self, mode, antialias=False):
        super().__init__()
        self.mode, self.antialias = mode, antialias
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        small = torch.relu(self.down(x))
        corners = False if self.mode in ("bilinear", "bicubic") else None
        big = F.interpolate(small, scale_factor=2, mode=self.mode, align_corners=corners, antialias=self.antialias)
        return self.out(torch.cat([big, torch.relu(self.skip(x))], dim=1))


def _quantized(model, capture="fx", runtime="auto"):
    torch.manual_seed(0)
    batches = [(torch.randn(2, 3, 16, 16),) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        return fxq.quantize(model.eval(), batches[0], batches, capture=capture, runtime=runtime), batches


def _resizes(quantized):
    return [n for n in quantized.graph.nodes if info(n).concept == "interpolate"]


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "nearest-exact"])
@pytest.mark.parametrize("capture", ["fx", "export"])
def test_resizes_with_int8_kernels_run_on_the_int8_tensor(mode, capture):
    model = _Decoder(mode)
    quantized, batches = _quantized(model, capture, runtime="graph")
    (resize,) = _resizes(quantized)
    assert info(resize).lowered_to == "int8 interpolate"
    assert resize.args[0].op == "call_module"  # the conv's int8 output, no dequantize between
    with torch.no_grad():
        assert sqnr_db(model(*batches[1]), quantized(*batches[1])) >= 30


@pytest.mark.parametrize("mode, antialias", [("bicubic", False), ("bilinear", True)])
def test_resizes_without_int8_kernels_stay_float_islands_that_say_why(mode, antialias):
    model = _Decoder(mode, antialias)
    quantized, batches = _quantized(model, runtime="graph")
    (resize,) = _resizes(quantized)
    assert info(resize).lowered_to == "reference:interpolate"  # dequantize -> float resize -> quantize
    declined = [reason for node in (resize, *resize.users) for _, reason in info(node).declined]
    assert any("no int8 kernel" in reason for reason in declined)
    with torch.no_grad():
        assert sqnr_db(model(*batches[1]), quantized(*batches[1])) >= 25


def test_a_whole_number_scale_factor_keeps_the_torchscript_runtime():
    quantized, batches = _quantized(_Decoder("nearest"))
    assert "torchscript_ms" in quantized.meta["fxq_runtime"], quantized.meta["fxq_runtime"]["why"]  # it compiled
    (resize,) = _resizes(quantized)
    assert resize.kwargs["scale_factor"] == 2.0 and isinstance(resize.kwargs["scale_factor"], float)


def test_upsample_modules_are_resizes_too():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.up = nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2.0, mode="bilinear")

        def forward(self, x):
            return self.up(self.conv(x)).sum(dim=1)

    quantized, _ = _quantized(Up(), runtime="graph")
    (resize,) = _resizes(quantized)
    assert info(resize).lowered_to == "int8 interpolate"
