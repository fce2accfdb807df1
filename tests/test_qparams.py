"""fxq.qparams: quantized ranges and scale/zero-point arithmetic, by hand and against torch.ao's observers."""

import warnings

import pytest
import torch

from fxq.errors import ConfigError
from fxq.qparams import compute_qparams, qrange

EPS = torch.finfo(torch.float32).eps

# dtype, symmetric, reduce_range, quant_min, quant_max: every combination torch.ao accepts and fxq supports
SETTINGS = [
    (torch.quint8, False, False, None, None),
    (torch.quint8, False, True, None, None),
    (torch.quint8, True, False, None, None),
    (torch.qint8, False, False, None, None),
    (torch.qint8, False, True, None, None),
    (torch.qint8, True, False, None, None),
    (torch.qint8, True, True, None, None),
    (torch.qint32, False, False, None, None),
    (torch.qint32, True, False, None, None),
    (torch.quint4x2, False, False, None, None),
    (torch.quint4x2, False, True, None, None),
    (torch.quint8, False, False, 0, 15),
    (torch.quint8, True, False, 0, 100),
    (torch.quint8, True, False, 0, 255),  # custom full range: torch.ao centres at 127, not 128
    (torch.quint8, False, True, 0, 255),
    (torch.qint8, True, False, -127, 127),
    (torch.qint8, False, True, -100, 100),
    (torch.qint8, True, True, -128, 127),
    (torch.qint32, False, False, -(2**20), 2**20),
]


def _ao_observer(dtype, symmetric, reduce_range, quant_min, quant_max, per_channel):
    observer = pytest.importorskip("torch.ao.quantization.observer")
    cls = observer.PerChannelMinMaxObserver if per_channel else observer.MinMaxObserver
    scheme = {(False, False): torch.per_tensor_affine, (True, False): torch.per_tensor_symmetric,
              (False, True): torch.per_channel_affine, (True, True): torch.per_channel_symmetric}[
        (symmetric, per_channel)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range deprecation
        return cls(dtype=dtype, qscheme=scheme, reduce_range=reduce_range, quant_min=quant_min,
                   quant_max=quant_max)


def _ranges(dtype):
    """Per-channel ranges of every kind: straddling 0, one-sided, tiny (scale clamped to eps), empty, zero."""
    g = torch.Generator().manual_seed(0)
    top = 1e2 if dtype == torch.qint32 else 1e4  # keeps torch.ao's int32 zero-point arithmetic in range
    magnitude = torch.logspace(-9, 0, 60, base=10) * top
    a, b = torch.randn(60, generator=g) * magnitude, torch.randn(60, generator=g) * magnitude
    # wide ranges: qint32's scale exceeds eps
    special_low = torch.tensor([0.0, 0.0, 1.5, -2.0, 3.0, -3.0, -1e-3, 2.0, -5000.0, -3000.0])
    special_high = torch.tensor([0.0, 1.0, 1.5, -2.0, 4.0, -1.0, 0.0, 2.0, 6000.0, 9000.0])
    return (torch.cat([torch.minimum(a, b), special_low]), torch.cat([torch.maximum(a, b), special_high]))


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_qrange_agrees_with_torch_ao(setting):
    dtype, symmetric, reduce_range, quant_min, quant_max = setting
    theirs = _ao_observer(*setting, per_channel=False)
    assert qrange(dtype, quant_min, quant_max, reduce_range) == (theirs.quant_min, theirs.quant_max)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_per_channel_qparams_agree_with_torch_ao_bit_exactly(setting):
    dtype, symmetric, reduce_range, quant_min, quant_max = setting
    low, high = _ranges(dtype)
    theirs = _ao_observer(*setting, per_channel=True)
    theirs(torch.stack([low, high], dim=1))  # channel i holds exactly low[i] and high[i]
    their_scale, their_zero_point = theirs.calculate_qparams()
    qmin, qmax = qrange(dtype, quant_min, quant_max, reduce_range)
    scale, zero_point = compute_qparams(low, high, qmin, qmax, dtype, symmetric,
                                        custom_range=quant_min is not None)
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int64
    assert torch.equal(scale, their_scale)
    assert torch.equal(zero_point, their_zero_point.long())


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_per_tensor_qparams_agree_with_torch_ao_bit_exactly(setting):
    dtype, symmetric, reduce_range, quant_min, quant_max = setting
    qmin, qmax = qrange(dtype, quant_min, quant_max, reduce_range)
    for low, high in zip(*_ranges(dtype), strict=True):
        theirs = _ao_observer(*setting, per_channel=False)
        theirs(torch.stack([low, high]))
        scale, zero_point = compute_qparams(low, high, qmin, qmax, dtype, symmetric,
                                            custom_range=quant_min is not None)
        their_scale, their_zero_point = theirs.calculate_qparams()
        assert scale.shape == zero_point.shape == (1,)
        assert torch.equal(scale, their_scale) and torch.equal(zero_point, their_zero_point.long())


def test_qrange_defaults_by_hand():
    assert qrange(torch.quint8) == (0, 255)
    assert qrange(torch.quint8, reduce_range=True) == (0, 127)
    assert qrange(torch.qint8) == (-128, 127)
    assert qrange(torch.qint8, reduce_range=True) == (-64, 63)
    assert qrange(torch.qint32) == (-(2**31), 2**31 - 1)
    assert qrange(torch.quint4x2) == (0, 15)
    assert qrange(torch.quint4x2, reduce_range=True) == (0, 15)  # torch.ao reduces only the 8-bit types


def test_qrange_custom_by_hand():
    assert qrange(torch.quint8, 0, 15) == (0, 15)
    assert qrange(torch.qint8, -127, 127) == (-127, 127)
    assert qrange(torch.qint8, -127, 127, reduce_range=True) == (-64, 63)  # floor division, as torch.ao


@pytest.mark.parametrize("args, message", [
    ((torch.quint8, -1, 255), r"do not fit torch\.quint8, whose range is \[0, 255\]"),
    ((torch.qint8, -128, 128), "do not fit"),
    ((torch.quint4x2, 0, 16), "do not fit"),
    ((torch.qint8, 0, 0), "quant_min=0 must be below quant_max=0"),
    ((torch.qint8, 3, -3), "must be below"),
    ((torch.quint8, 2, 100), "must include 0"),
    ((torch.qint8, -100, -1), "must include 0"),
    ((torch.quint8, 0, None), "give both"),
    ((torch.quint8, None, 10), "give both"),
    ((torch.float16, None, None), "got dtype torch.float16"),
])
def test_qrange_rejects_bad_ranges(args, message):
    with pytest.raises(ConfigError, match=message):
        qrange(*args)


def test_qrange_rejects_a_range_reduce_range_empties():
    with pytest.raises(ConfigError, match=r"halves \[0, 1\] to \[0, 0\], a single level"):
        qrange(torch.quint8, 0, 1, reduce_range=True)


def test_affine_by_hand():
    scale, zero_point = compute_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255, torch.quint8, False)
    assert scale.item() == pytest.approx(4 / 255) and zero_point.tolist() == [64]  # 0 - round(-63.75)
    # one-sided ranges are widened to include 0
    scale, zero_point = compute_qparams(torch.tensor(2.0), torch.tensor(4.0), 0, 255, torch.quint8, False)
    assert scale.item() == pytest.approx(4 / 255) and zero_point.tolist() == [0]
    scale, zero_point = compute_qparams(torch.tensor(-4.0), torch.tensor(-2.0), -128, 127, torch.qint8, False)
    assert scale.item() == pytest.approx(4 / 255) and zero_point.tolist() == [127]


def test_symmetric_by_hand():
    scale, zero_point = compute_qparams(torch.tensor(-1.0), torch.tensor(0.5), -128, 127, torch.qint8, True)
    assert scale.item() == pytest.approx(1 / 127.5) and zero_point.tolist() == [0]
    _, zero_point = compute_qparams(torch.tensor(-1.0), torch.tensor(0.5), 0, 255, torch.quint8, True)
    assert zero_point.tolist() == [128]
    _, zero_point = compute_qparams(torch.tensor(-1.0), torch.tensor(0.5), 0, 255, torch.quint8, True,
                                    custom_range=True)
    assert zero_point.tolist() == [127]
    _, zero_point = compute_qparams(torch.tensor(-1.0), torch.tensor(0.5), 0, 100, torch.quint8, True,
                                    custom_range=True)
    assert zero_point.tolist() == [50]


def test_scale_is_at_least_eps():
    scale, zero_point = compute_qparams(torch.tensor(0.0), torch.tensor(0.0), 0, 255, torch.quint8, False)
    assert scale.tolist() == [EPS] and zero_point.tolist() == [0]
    scale, _ = compute_qparams(torch.tensor(0.0), torch.tensor(1e-9), -128, 127, torch.qint8, True, eps=1e-4)
    assert scale.item() == pytest.approx(1e-4)


def test_per_channel_is_elementwise():
    low, high = torch.tensor([-1.0, 0.0, -2.0]), torch.tensor([3.0, 2.55, -1.0])
    scale, zero_point = compute_qparams(low, high, 0, 255, torch.quint8, False)
    assert scale.shape == zero_point.shape == (3,)
    assert scale.tolist() == pytest.approx([4 / 255, 0.01, 2 / 255])
    assert zero_point.tolist() == [64, 0, 255]


def test_qint32_zero_point_does_not_overflow():
    # torch.ao computes this zero point in int32, which overflows (it returns 0); the true zero point maps
    # -1000 to about quant_min, so 0.0 sits at -2**31 + 1000 / scale.
    qmin, qmax = qrange(torch.qint32)
    scale, zero_point = compute_qparams(torch.tensor(-1000.0), torch.tensor(10.0), qmin, qmax, torch.qint32,
                                        False)
    assert scale.item() == pytest.approx(1010 / (2**32 - 1), rel=1e-6)
    assert zero_point.item() == pytest.approx(-(2**31) + 1000 / (1010 / (2**32 - 1)), abs=300)
    assert (qmin - zero_point.item()) * scale.item() == pytest.approx(-1000, abs=1e-3)
