import copy
import io
import pickle

import pytest
import torch

from fxq.errors import CalibrationError, ConfigError
from fxq.observers import (
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)


def _data(seed=0, shape=(4, 6, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2 + 0.3


def _ao():
    return pytest.importorskip("torch.ao.quantization.observer")


PER_TENSOR = [
    (MinMaxObserver, "MinMaxObserver", {}),
    (MovingAverageMinMaxObserver, "MovingAverageMinMaxObserver", {"averaging_constant": 0.1}),
]
PER_CHANNEL = [
    (PerChannelMinMaxObserver, "PerChannelMinMaxObserver", {}),
    (MovingAveragePerChannelMinMaxObserver, "MovingAveragePerChannelMinMaxObserver", {"averaging_constant": 0.1}),
]
SETTINGS = [
    # dtype, symmetric, reduce_range, quant_min, quant_max
    (torch.quint8, False, False, None, None),
    (torch.quint8, False, True, None, None),
    (torch.quint8, True, False, None, None),
    (torch.qint8, False, False, None, None),
    (torch.qint8, True, False, None, None),
    (torch.qint8, True, True, None, None),
    (torch.qint8, False, True, None, None),
    (torch.quint8, False, False, 0, 15),
    (torch.quint8, True, False, 0, 100),
    (torch.qint8, True, False, -127, 127),
    (torch.qint8, False, True, -100, 100),
    (torch.qint32, False, False, None, None),
    (torch.qint32, True, False, None, None),
]


def _pair(ours_cls, theirs_name, extra, dtype, symmetric, reduce_range, qmin, qmax, per_channel, axis=0):
    observer = _ao()
    scheme = {(False, False): torch.per_tensor_affine, (True, False): torch.per_tensor_symmetric,
              (False, True): torch.per_channel_affine, (True, True): torch.per_channel_symmetric}[
        (symmetric, per_channel)]
    theirs_kwargs = dict(dtype=dtype, qscheme=scheme, reduce_range=reduce_range, quant_min=qmin, quant_max=qmax,
                         **extra)
    ours_kwargs = dict(dtype=dtype, symmetric=symmetric, reduce_range=reduce_range, quant_min=qmin, quant_max=qmax,
                       **extra)
    if per_channel:
        theirs_kwargs["ch_axis"] = ours_kwargs["ch_axis"] = axis
    return ours_cls(**ours_kwargs), getattr(observer, theirs_name)(**theirs_kwargs)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("ours_cls, theirs_name, extra", PER_TENSOR, ids=[p[1] for p in PER_TENSOR])
def test_per_tensor_qparams_agree_with_torch_ao(ours_cls, theirs_name, extra, setting):
    ours, theirs = _pair(ours_cls, theirs_name, extra, *setting, per_channel=False)
    for seed in range(3):
        x = _data(seed)
        ours(x)
        theirs(x)
    scale, zero_point = ours.calculate_qparams()
    their_scale, their_zero_point = theirs.calculate_qparams()
    assert torch.equal(scale, their_scale)
    assert torch.equal(zero_point, their_zero_point.long())


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s[0] != torch.qint32], ids=str)
@pytest.mark.parametrize("ours_cls, theirs_name, extra", PER_CHANNEL, ids=[p[1] for p in PER_CHANNEL])
def test_per_channel_qparams_agree_with_torch_ao(ours_cls, theirs_name, extra, setting, axis):
    ours, theirs = _pair(ours_cls, theirs_name, extra, *setting, per_channel=True, axis=axis)
    for seed in range(3):
        x = _data(seed)
        ours(x)
        theirs(x)
    scale, zero_point = ours.calculate_qparams()
    their_scale, their_zero_point = theirs.calculate_qparams()
    assert scale.shape == (x.shape[axis],)
    assert torch.equal(scale, their_scale)
    assert torch.equal(zero_point, their_zero_point.long())


def test_qparams_by_hand():
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(torch.tensor([0.5, 2.55]))  # range widened to [0, 2.55]: scale 0.01, zero point 0
    scale, zero_point = observer.calculate_qparams()
    assert scale.item() == pytest.approx(0.01)
    assert zero_point.item() == 0
    symmetric = MinMaxObserver(dtype=torch.qint8, symmetric=True)
    symmetric(torch.tensor([-1.0, 0.5]))  # max |x| = 1 over 127.5 steps
    assert symmetric.calculate_qparams()[0].item() == pytest.approx(1 / 127.5)
    assert symmetric.calculate_qparams()[1].item() == 0


def test_moving_average_follows_batches():
    observer = MovingAverageMinMaxObserver(averaging_constant=0.5)
    observer(torch.tensor([0.0, 4.0]))
    observer(torch.tensor([0.0, 2.0]))
    assert observer.max_val.item() == pytest.approx(3.0)  # 4 + 0.5 * (2 - 4)


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver, HistogramObserver])
def test_merge_equals_one_observer_fed_everything(cls):
    data = [_data(seed) for seed in range(4)]
    whole, first, second = cls(), cls(), cls()
    for x in data:
        whole(x)
    for x in data[:2]:
        first(x)
    for x in data[2:]:
        second(x)
    first.merge(second)
    merged, reference = first.calculate_qparams(), whole.calculate_qparams()
    if cls is HistogramObserver:  # re-binning is approximate
        assert torch.allclose(merged[0], reference[0], rtol=0.05)
    else:
        assert torch.equal(merged[0], reference[0]) and torch.equal(merged[1], reference[1])


def test_merge_rejects_different_settings():
    with pytest.raises(ConfigError, match="cannot merge"):
        MinMaxObserver().merge(MinMaxObserver(dtype=torch.qint8))


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver, HistogramObserver,
                                 MovingAverageMinMaxObserver])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_name_the_node(cls, bad):
    observer = cls()
    observer.node_name = "block.fc1"
    x = _data()
    x[0, 0, 0] = bad
    with pytest.raises(CalibrationError, match=r"block\.fc1.*NaN or Inf"):
        observer(x)


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver, HistogramObserver])
def test_no_data_names_the_node(cls):
    observer = cls()
    observer.node_name = "conv3"
    with pytest.raises(CalibrationError, match="conv3.*saw no data"):
        observer.calculate_qparams()
    fixed = FixedQParamsObserver(scale=1 / 256, zero_point=0)
    fixed.node_name = "sigmoid"
    with pytest.raises(CalibrationError, match="sigmoid"):
        fixed.calculate_qparams()


def test_integer_input_is_refused():
    observer = MinMaxObserver()
    observer.node_name = "ids"
    with pytest.raises(ConfigError, match="ids.*only watch float"):
        observer(torch.arange(4))


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver, HistogramObserver,
                                 MovingAveragePerChannelMinMaxObserver])
def test_state_dict_round_trip_and_deepcopy(cls):
    observer = cls()
    observer(_data())
    buffer = io.BytesIO()
    torch.save(observer.state_dict(), buffer)
    buffer.seek(0)
    fresh = cls()
    fresh.load_state_dict(torch.load(buffer))
    for other in (fresh, copy.deepcopy(observer)):
        assert all(torch.equal(a, b) for a, b in zip(observer.calculate_qparams(), other.calculate_qparams(),
                                                     strict=True))


def test_factory_is_picklable_comparable_and_readable():
    factory = MinMaxObserver.with_args(dtype=torch.qint8, reduce_range=True)
    clone = pickle.loads(pickle.dumps(factory))
    assert clone == factory and hash(clone) == hash(factory)
    assert repr(factory) == "MinMaxObserver.with_args(dtype=qint8, reduce_range=True)"
    observer = factory()
    assert observer.dtype == torch.qint8 and (observer.quant_min, observer.quant_max) == (-64, 63)


def test_bad_ranges_are_config_errors():
    with pytest.raises(ConfigError, match="quant_min"):
        MinMaxObserver(dtype=torch.quint8, quant_min=-1, quant_max=255)
    with pytest.raises(ConfigError, match="include 0"):
        MinMaxObserver(dtype=torch.quint8, quant_min=2, quant_max=100)
    with pytest.raises(ConfigError, match="both"):
        MinMaxObserver(quant_min=0)
    with pytest.raises(ConfigError, match="reduce_range"):
        MinMaxObserver(dtype=torch.quint8, symmetric=True, reduce_range=True)


def test_histogram_clips_heavy_tails_and_beats_minmax():
    torch.manual_seed(0)
    x = torch.distributions.StudentT(3.0).sample((20000,))  # heavy tails: rare far values
    histogram, minmax = HistogramObserver(), MinMaxObserver()
    for chunk in x.split(5000):
        histogram(chunk)
        minmax(chunk)

    def mse(observer):
        scale, zero_point = observer.calculate_qparams()
        q = torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.quint8)
        return float((q.dequantize() - x).pow(2).mean())

    low, high = histogram.observed_range()
    assert low > x.min() and high < x.max()  # the farthest values are clipped
    assert mse(histogram) < mse(minmax)


def test_histogram_keeps_the_range_of_uniform_data():
    x = torch.rand(50000, generator=torch.Generator().manual_seed(1)) * 6 - 2  # uniform [-2, 4]
    histogram = HistogramObserver()
    histogram(x)
    low, high = histogram.observed_range()
    assert low.item() == pytest.approx(-2, abs=0.1) and high.item() == pytest.approx(4, abs=0.1)


def test_histogram_rebins_when_the_range_grows():
    histogram = HistogramObserver(bins=64)
    histogram(torch.linspace(0, 1, 1000))
    histogram(torch.linspace(-3, 3, 1000))
    assert histogram.histogram.sum().item() == pytest.approx(2000)
    assert histogram.min_val.item() == -3 and histogram.max_val.item() == 3


def test_fixed_and_placeholder():
    fixed = FixedQParamsObserver(scale=2 / 256, zero_point=128)
    fixed(torch.tanh(_data()))
    scale, zero_point = fixed.calculate_qparams()
    assert scale.item() == pytest.approx(2 / 256) and zero_point.item() == 128
    placeholder = PlaceholderObserver(dtype=torch.float16)
    assert placeholder(_data()).dtype == torch.float32
    with pytest.raises(ConfigError, match="float16"):
        placeholder.calculate_qparams()
