"""fxq.observers: qparams against torch.ao's, merging, errors, persistence, the histogram's range search."""

import copy
import io
import pickle
import time
import warnings

import pytest
import torch

from fxq.errors import CalibrationError, ConfigError
from fxq.observers import (
    SIGMOID_QPARAMS,
    TANH_QPARAMS,
    EntropyObserver,
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    PerChannelMinMaxObserver,
    PerChannelMSEObserver,
    PlaceholderObserver,
)


def merged_halves(make, batches):
    """(one observer fed every batch, one fed the first two merged with one fed the rest)."""
    whole, first, second = make(), make(), make()
    for x in batches:
        whole(x)
    for x in batches[:2]:
        first(x)
    for x in batches[2:]:
        second(x)
    first.merge(second)
    return whole, first

def _data(seed=0, shape=(4, 6, 5), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale + 0.3


PER_TENSOR = [
    (MinMaxObserver, "MinMaxObserver", {}),
    (MovingAverageMinMaxObserver, "MovingAverageMinMaxObserver", {"averaging_constant": 0.1}),
]
PER_CHANNEL = [
    (PerChannelMinMaxObserver, "PerChannelMinMaxObserver", {}),
    (MovingAveragePerChannelMinMaxObserver, "MovingAveragePerChannelMinMaxObserver",
     {"averaging_constant": 0.1}),
]
SETTINGS = [
    # dtype, symmetric, reduce_range, quant_min, quant_max
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
    (torch.quint8, False, False, 0, 15),
    (torch.quint8, True, False, 0, 100),
    (torch.quint8, True, False, 0, 255),
    (torch.qint8, True, False, -127, 127),
    (torch.qint8, False, True, -100, 100),
]
ALL_CLASSES = [MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
               MovingAveragePerChannelMinMaxObserver, HistogramObserver, PercentileObserver, MSEObserver,
               EntropyObserver, PerChannelMSEObserver]


def _pair(ours_cls, theirs_name, extra, dtype, symmetric, reduce_range, qmin, qmax, per_channel, axis=0):
    observer = pytest.importorskip("torch.ao.quantization.observer")
    scheme = {(False, False): torch.per_tensor_affine, (True, False): torch.per_tensor_symmetric,
              (False, True): torch.per_channel_affine, (True, True): torch.per_channel_symmetric}[
        (symmetric, per_channel)]
    common = dict(dtype=dtype, reduce_range=reduce_range, quant_min=qmin, quant_max=qmax, **extra)
    theirs_kwargs, ours_kwargs = dict(qscheme=scheme, **common), dict(symmetric=symmetric, **common)
    if per_channel:
        theirs_kwargs["ch_axis"] = ours_kwargs["ch_axis"] = axis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range deprecation
        theirs = getattr(observer, theirs_name)(**theirs_kwargs)
    return ours_cls(**ours_kwargs), theirs


def _feed_both(ours, theirs, input_dtype=torch.float32):
    for seed in range(3):
        x = _data(seed).to(input_dtype)
        assert ours(x) is x
        theirs(x)


def _assert_same_qparams(ours, theirs):
    scale, zero_point = ours.calculate_qparams()
    their_scale, their_zero_point = theirs.calculate_qparams()
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int64
    assert torch.equal(scale, their_scale)
    assert torch.equal(zero_point, their_zero_point.long())


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("ours_cls, theirs_name, extra", PER_TENSOR, ids=[p[1] for p in PER_TENSOR])
def test_per_tensor_qparams_agree_with_torch_ao(ours_cls, theirs_name, extra, setting):
    ours, theirs = _pair(ours_cls, theirs_name, extra, *setting, per_channel=False)
    _feed_both(ours, theirs)
    _assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("ours_cls, theirs_name, extra", PER_CHANNEL, ids=[p[1] for p in PER_CHANNEL])
def test_per_channel_qparams_agree_with_torch_ao(ours_cls, theirs_name, extra, setting, axis):
    ours, theirs = _pair(ours_cls, theirs_name, extra, *setting, per_channel=True, axis=axis)
    _feed_both(ours, theirs)
    assert ours.calculate_qparams()[0].shape == (_data().shape[axis],)
    _assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("input_dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("ours_cls, theirs_name, extra", PER_TENSOR + PER_CHANNEL,
                         ids=[p[1] for p in PER_TENSOR + PER_CHANNEL])
def test_other_float_inputs_agree_with_torch_ao(ours_cls, theirs_name, extra, input_dtype):
    per_channel = ours_cls in (PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver)
    ours, theirs = _pair(ours_cls, theirs_name, extra, torch.quint8, False, False, None, None, per_channel)
    _feed_both(ours, theirs, input_dtype)
    _assert_same_qparams(ours, theirs)


def test_defaults_match_torch_ao():
    assert (MinMaxObserver().dtype, MinMaxObserver().symmetric) == (torch.quint8, False)
    per_channel = PerChannelMinMaxObserver()
    assert (per_channel.dtype, per_channel.symmetric, per_channel.ch_axis) == (torch.qint8, True, 0)
    assert MovingAverageMinMaxObserver().averaging_constant == 0.01
    assert HistogramObserver().bins == 2048


def test_fixed_qparams_agree_with_torch_ao():
    observer = pytest.importorskip("torch.ao.quantization.observer")
    for ours, theirs in [(SIGMOID_QPARAMS(), observer.default_fixed_qparams_range_0to1_observer()),
                         (TANH_QPARAMS(), observer.default_fixed_qparams_range_neg1to1_observer())]:
        ours(torch.rand(10))
        theirs(torch.rand(10))
        _assert_same_qparams(ours, theirs)
        assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)


def test_min_max_by_hand():
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(torch.tensor([0.5, 2.55]))
    observer(torch.tensor([1.0, 2.0]))
    scale, zero_point = observer.calculate_qparams()  # range widened to [0, 2.55]: scale 0.01, zero point 0
    assert scale.item() == pytest.approx(0.01) and zero_point.tolist() == [0]
    per_channel = PerChannelMinMaxObserver(ch_axis=1)
    per_channel(torch.tensor([[-1.0, 2.0], [0.5, -4.0]]))  # channel 0: [-1, 0.5], channel 1: [-4, 2]
    assert per_channel.min_val.tolist() == [-1.0, -4.0] and per_channel.max_val.tolist() == [0.5, 2.0]
    assert per_channel.calculate_qparams()[0].tolist() == pytest.approx([1 / 127.5, 4 / 127.5])


def test_moving_average_by_hand():
    observer = MovingAverageMinMaxObserver(averaging_constant=0.5)
    observer(torch.tensor([-2.0, 4.0]))  # the first batch sets the range
    assert (observer.min_val.item(), observer.max_val.item()) == (-2.0, 4.0)
    observer(torch.tensor([0.0, 2.0]))
    assert (observer.min_val.item(), observer.max_val.item()) == (-1.0, 3.0)  # -2 + 0.5 * 2, 4 + 0.5 * -2


def test_empty_batches_are_ignored():
    for cls in ALL_CLASSES:
        observer = cls()
        observer(torch.empty(0, 3))
        assert not observer.has_data


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver])
def test_merge_equals_one_observer_fed_everything(cls):
    data = [_data(seed) for seed in range(4)]
    whole, first = merged_halves(cls, data)
    for ours, reference in zip(first.calculate_qparams(), whole.calculate_qparams(), strict=True):
        assert torch.equal(ours, reference)


def test_histogram_merge_approximates_one_observer_fed_everything():
    data = [_data(seed, shape=(5000,), scale=1.0 + seed) for seed in range(4)]  # ranges differ: re-binning
    whole, first = merged_halves(HistogramObserver, data)
    assert first.min_val == whole.min_val and first.max_val == whole.max_val
    assert first.histogram.sum().item() == pytest.approx(20000)
    assert (first.histogram - whole.histogram).abs().sum().item() < 0.05 * 20000
    for ours, reference in zip(first.observed_range(), whole.observed_range(), strict=True):
        width = (whole.max_val - whole.min_val).item()
        assert ours.item() == pytest.approx(reference.item(), abs=0.05 * width)


def test_merge_into_and_from_an_empty_observer():
    fed, empty = MinMaxObserver(), MinMaxObserver()
    fed(torch.tensor([-1.0, 2.0]))
    fed.merge(MinMaxObserver())  # nothing to add
    assert (fed.min_val.item(), fed.max_val.item()) == (-1.0, 2.0)
    empty.merge(fed)
    assert (empty.min_val.item(), empty.max_val.item()) == (-1.0, 2.0)
    fed(torch.tensor([5.0]))
    assert empty.max_val.item() == 2.0  # merged state is a copy, not shared


def test_moving_averages_merge_to_their_mean():
    first, second = MovingAverageMinMaxObserver(), MovingAverageMinMaxObserver()
    first(torch.tensor([-2.0, 4.0]))
    second(torch.tensor([-1.0, 2.0]))
    first.merge(second)
    assert (first.min_val.item(), first.max_val.item()) == (-1.5, 3.0)


@pytest.mark.parametrize("first, second", [
    (MinMaxObserver(), MinMaxObserver(dtype=torch.qint8)),
    (MinMaxObserver(), MovingAverageMinMaxObserver()),
    (MinMaxObserver(), MinMaxObserver(symmetric=True)),
    (MinMaxObserver(), MinMaxObserver(quant_min=0, quant_max=255)),  # same range, other symmetric zero point
    (MovingAverageMinMaxObserver(), MovingAverageMinMaxObserver(averaging_constant=0.5)),
    (PerChannelMinMaxObserver(), PerChannelMinMaxObserver(ch_axis=1)),
    (HistogramObserver(), HistogramObserver(bins=256)),
    (FixedQParamsObserver(1 / 256, 0), FixedQParamsObserver(2 / 256, 128)),
])
def test_merge_rejects_different_settings(first, second):
    first.node_name = "layer1.conv"
    with pytest.raises(ConfigError, match=r"cannot merge .* for node 'layer1\.conv'"):
        first.merge(second)


def test_per_channel_refuses_a_different_channel_count():
    observer = PerChannelMinMaxObserver()
    observer.node_name = "fc.weight"
    observer(torch.randn(4, 3))
    with pytest.raises(ConfigError, match=r"'fc\.weight' has 4 channels along axis 0, but this batch has 1"):
        observer(torch.randn(1, 3))  # would silently broadcast
    other = PerChannelMinMaxObserver()
    other(torch.randn(5, 3))
    with pytest.raises(ConfigError, match="the observer merged in has 5"):
        observer.merge(other)


def test_per_channel_refuses_an_axis_the_tensor_lacks():
    observer = PerChannelMinMaxObserver(ch_axis=2)
    observer.node_name = "w"
    with pytest.raises(ConfigError, match=r"'w' has ch_axis=2, but the tensor it watches has shape \(4, 3\)"):
        observer(torch.randn(4, 3))


@pytest.mark.parametrize("cls", ALL_CLASSES + [FixedQParamsObserver])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_name_the_node_and_where_to_look(cls, bad):
    observer = FixedQParamsObserver(1 / 256, 0) if cls is FixedQParamsObserver else cls()
    observer.node_name = "block.fc1"
    observer(_data())  # a good batch first: the bad one must still be caught
    x = _data(1)
    x[1, 2, 3] = bad
    message = r"'block\.fc1' contains NaN or Inf.*check the calibration inputs and the ops that compute " \
              r"'block\.fc1'"
    with pytest.raises(CalibrationError, match=message):
        observer(x)


@pytest.mark.parametrize("cls", ALL_CLASSES + [FixedQParamsObserver])
def test_no_data_names_the_node(cls):
    observer = FixedQParamsObserver(1 / 256, 0) if cls is FixedQParamsObserver else cls()
    observer.node_name = "conv3"
    assert not observer.has_data
    message = "'conv3' saw no data; run calibration data through the prepared model before convert"
    with pytest.raises(CalibrationError, match=message):
        observer.calculate_qparams()


@pytest.mark.parametrize("cls", ALL_CLASSES + [PlaceholderObserver])
@pytest.mark.parametrize("value", [torch.arange(4), torch.ones(3, dtype=torch.bool), 3.0])
def test_non_float_input_is_refused(cls, value):
    observer = cls()
    observer.node_name = "ids"
    with pytest.raises(ConfigError, match="'ids' got a .* value; observers only watch float tensors"):
        observer(value)


def _observed(cls):
    observer = FixedQParamsObserver(1 / 256, 0) if cls is FixedQParamsObserver else cls()
    observer(_data())
    observer(_data(1, scale=3.0))
    return observer


@pytest.mark.parametrize("cls", ALL_CLASSES + [FixedQParamsObserver])
def test_state_dict_round_trips_into_a_fresh_observer(cls):
    observer = _observed(cls)
    buffer = io.BytesIO()
    torch.save(observer.state_dict(), buffer)
    buffer.seek(0)
    fresh = FixedQParamsObserver(1 / 256, 0) if cls is FixedQParamsObserver else cls()
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.has_data
    for ours, reference in zip(fresh.calculate_qparams(), observer.calculate_qparams(), strict=True):
        assert torch.equal(ours, reference)


@pytest.mark.parametrize("cls", ALL_CLASSES + [FixedQParamsObserver])
def test_deepcopy_is_independent(cls):
    observer = _observed(cls)
    clone = copy.deepcopy(observer)
    for ours, reference in zip(clone.calculate_qparams(), observer.calculate_qparams(), strict=True):
        assert torch.equal(ours, reference)
    clone(_data(2, scale=50.0))
    if cls is not FixedQParamsObserver:
        assert not torch.equal(clone.calculate_qparams()[0], observer.calculate_qparams()[0])


def test_state_lives_in_buffers():
    assert set(MinMaxObserver().state_dict()) == {"min_val", "max_val"}
    assert set(HistogramObserver().state_dict()) == {"histogram", "min_val", "max_val"}


def test_with_args_factory_is_picklable_comparable_and_readable():
    factory = MinMaxObserver.with_args(dtype=torch.qint8, reduce_range=True)
    clone = pickle.loads(pickle.dumps(factory))
    assert clone == factory and hash(clone) == hash(factory)
    assert factory != MinMaxObserver.with_args(dtype=torch.qint8)
    assert repr(factory) == "MinMaxObserver.with_args(dtype=qint8, reduce_range=True)"
    observer = clone()
    assert isinstance(observer, MinMaxObserver) and observer is not factory()
    assert observer.dtype == torch.qint8 and (observer.quant_min, observer.quant_max) == (-64, 63)
    assert factory(reduce_range=False).quant_min == -128  # keywords at the call override the factory's
    assert factory.with_args(symmetric=True)().symmetric
    assert pickle.loads(pickle.dumps(TANH_QPARAMS))().zero_point == 128


def test_extra_repr_shows_dtype_range_and_what_was_seen():
    observer = MinMaxObserver()
    assert repr(observer) == "MinMaxObserver(dtype=quint8, affine, range=[0, 255], no data)"
    observer(torch.tensor([-1.5, 2.25]))
    assert repr(observer) == "MinMaxObserver(dtype=quint8, affine, range=[0, 255], min=-1.5, max=2.25)"
    per_channel = PerChannelMinMaxObserver(ch_axis=1)
    per_channel(torch.tensor([[-1.0, 2.0], [0.5, -4.0]]))
    assert repr(per_channel) == ("PerChannelMinMaxObserver(dtype=qint8, symmetric, range=[-128, 127], "
                                 "ch_axis=1, channels=2, min=-4, max=2)")
    assert "bins=2048" in repr(HistogramObserver())
    assert repr(SIGMOID_QPARAMS()) == ("FixedQParamsObserver(dtype=quint8, affine, range=[0, 255], "
                                       "scale=0.00390625, zero_point=0)")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="do not fit"):
        MinMaxObserver(dtype=torch.quint8, quant_min=-1, quant_max=255)
    with pytest.raises(ConfigError, match="include 0"):
        MinMaxObserver(dtype=torch.quint8, quant_min=2, quant_max=100)
    with pytest.raises(ConfigError, match="both"):
        MinMaxObserver(quant_min=0)
    with pytest.raises(ConfigError, match="reduce_range"):
        MinMaxObserver(dtype=torch.quint8, symmetric=True, reduce_range=True)
    with pytest.raises(ConfigError, match="reduce_range"):
        PerChannelMinMaxObserver(dtype=torch.quint8, reduce_range=True)
    with pytest.raises(ConfigError, match="quint4x2"):  # torch.ao accepts it and puts the zero point at 0
        MinMaxObserver(dtype=torch.quint4x2, symmetric=True)
    with pytest.raises(ConfigError, match="zero point"):
        FixedQParamsObserver(scale=0.1, zero_point=300)
    with pytest.raises(ConfigError, match="bins"):
        HistogramObserver(bins=0)
    with pytest.raises(ConfigError, match="search_step"):
        HistogramObserver(search_step=0)


def test_fixed_qparams_measure_nothing():
    observer = TANH_QPARAMS()
    observer(torch.tensor([5.0, -7.0]))  # outside [-1, 1]: fixed qparams do not move
    scale, zero_point = observer.calculate_qparams()
    assert scale.tolist() == [2 / 256] and zero_point.tolist() == [128]
    assert SIGMOID_QPARAMS().scale == 1 / 256 and SIGMOID_QPARAMS().zero_point == 0


def test_placeholder_needs_no_data_and_has_no_qparams():
    placeholder = PlaceholderObserver(dtype=torch.float16)
    placeholder.node_name = "head"
    x = _data()
    assert placeholder(x) is x and placeholder.has_data and isinstance(placeholder, Observer)
    with pytest.raises(ConfigError, match="'head' is marked torch.float16, which has no scale or zero point"):
        placeholder.calculate_qparams()
    placeholder.merge(PlaceholderObserver(dtype=torch.float16))
    assert repr(placeholder) == "PlaceholderObserver(dtype=float16)"


def _mse(x, observer):
    scale, zero_point = observer.calculate_qparams()
    q = torch.clamp(torch.round(x / scale) + zero_point, observer.quant_min, observer.quant_max)
    return (((q - zero_point) * scale - x) ** 2).mean().item()


@pytest.mark.parametrize("symmetric, dtype", [(False, torch.quint8), (True, torch.qint8)])
def test_histogram_clips_outliers_and_beats_minmax(symmetric, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200000, generator=g)
    x[:3] = torch.tensor([12.0, -14.0, 15.0])  # a few huge values
    histogram = HistogramObserver(symmetric=symmetric, dtype=dtype)
    minmax = MinMaxObserver(symmetric=symmetric, dtype=dtype)
    for chunk in x.split(20000):
        histogram(chunk)
        minmax(chunk)
    low, high = histogram.observed_range()
    assert low > -14 and high < 15  # the outliers are clipped
    if symmetric:
        assert low == -high and histogram.calculate_qparams()[1].tolist() == [0]
    assert _mse(x, histogram) < 0.8 * _mse(x, minmax)
    # no range on a grid of whole numbers does noticeably better
    if symmetric:
        grid = [(-b, b) for b in range(2, 16)]
    else:
        grid = [(a, b) for a in range(-14, -1) for b in range(2, 16)]
    best = min(_mse(x, _fixed_range(a, b, symmetric, dtype)) for a, b in grid)
    assert _mse(x, histogram) <= best * 1.02


def _fixed_range(low, high, symmetric, dtype):
    observer = MinMaxObserver(symmetric=symmetric, dtype=dtype)
    observer(torch.tensor([float(low), float(high)]))
    return observer


def test_histogram_clips_heavy_tails():
    torch.manual_seed(0)
    x = torch.distributions.StudentT(3.0).sample((20000,))
    histogram, minmax = HistogramObserver(), MinMaxObserver()
    histogram(x)
    minmax(x)
    low, high = histogram.observed_range()
    assert low > x.min() and high < x.max()
    assert _mse(x, histogram) < _mse(x, minmax)


@pytest.mark.parametrize("symmetric, dtype", [(False, torch.quint8), (True, torch.qint8)])
def test_histogram_keeps_the_range_of_uniform_data(symmetric, dtype):
    x = torch.rand(50000, generator=torch.Generator().manual_seed(1)) * 6 - 2  # uniform [-2, 4]
    histogram = HistogramObserver(symmetric=symmetric, dtype=dtype)
    histogram(x)
    low, high = histogram.observed_range()
    assert high.item() == pytest.approx(4, abs=0.05)
    assert low.item() == pytest.approx(-4 if symmetric else -2, abs=0.05)


def test_histogram_of_one_sided_and_constant_data():
    relu = HistogramObserver()
    relu(torch.rand(1000) * 3)
    low, high = relu.observed_range()
    assert low.item() == 0 and high.item() == pytest.approx(3, abs=0.05)
    constant = HistogramObserver()
    constant(torch.full((10,), 0.5))
    scale, zero_point = constant.calculate_qparams()
    assert scale.item() == pytest.approx(0.5 / 255, rel=1e-3) and zero_point.tolist() == [0]
    zeros = HistogramObserver()
    zeros(torch.zeros(10))
    assert torch.isfinite(zeros.calculate_qparams()[0]).all()


def test_histogram_rebins_when_the_range_grows():
    histogram = HistogramObserver(bins=64)
    first, second = torch.linspace(0, 1, 1000), torch.linspace(-3, 3, 1000)
    histogram(first)
    histogram(second)
    assert histogram.histogram.sum().item() == pytest.approx(2000)
    assert histogram.min_val.item() == -3 and histogram.max_val.item() == 3
    direct = torch.histc(torch.cat([first, second]), 64, -3, 3).double()  # what one pass would have counted
    assert (histogram.histogram - direct).abs().sum().item() < 0.02 * 2000


def test_histogram_search_is_fast():
    histogram = HistogramObserver()
    histogram(torch.randn(100000, generator=torch.Generator().manual_seed(0)))
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        histogram.calculate_qparams()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.05
