"""GreedyHistogramObserver on its own: its range choice and re-binning worked out by hand on tiny histograms,
merging, and the torch.ao name that maps to it (tests/compat/test_torch_ao_objects.py compares it with torch.ao's
HistogramObserver itself)."""

import pytest
import torch

from fxq.errors import ConfigError
from fxq.observers import GreedyHistogramObserver, HistogramObserver, MinMaxObserver


def _range(observer):
    return tuple(value.item() for value in observer.observed_range())


def test_the_first_step_of_the_walk_is_taken_unscored():
    # Bins of 0.25 hold 0.0 (bin 0) and 1.0 (bin 3). The first step drops bin 3 and is never compared with the
    # whole range; the next candidate, bin 0 alone, clips 1.0 further and costs more, so the walk stops.
    observer = GreedyHistogramObserver(bins=4)
    observer(torch.tensor([0.0, 1.0]))
    assert _range(observer) == (0.0, 0.75)
    observer = GreedyHistogramObserver(bins=4)
    observer(torch.tensor([-1.0, 0.2, 0.3, 1.0]))  # bins of 0.5: the top one goes, then the error rises
    assert _range(observer) == (-1.0, 0.5)


def test_the_error_is_modelled_on_the_dtypes_whole_grid_whatever_range_the_qparams_use():
    data = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    full, reduced = GreedyHistogramObserver(), GreedyHistogramObserver(reduce_range=True)
    full(data)
    reduced(data)
    assert _range(full) == _range(reduced)  # a 128-cell grid would clip more: ends at bin 1955, not 2046
    assert _range(full)[1] < data.max().item()
    assert reduced.calculate_qparams()[0].item() == pytest.approx(2 * full.calculate_qparams()[0].item(), rel=0.01)


def test_a_growing_range_moves_each_sixteenth_of_a_bin_whole():
    observer = GreedyHistogramObserver(bins=4)
    observer(torch.tensor([0.0] + [0.6] * 16 + [1.0]))  # bins of [0, 1]: 1, 0, 16, 1
    observer(torch.tensor([-0.6]))  # new edges -0.6, -0.2, 0.2, 0.6, 1.0
    # Old bin 0 ([0, 0.25]): 13 sixteenths have their midpoint below 0.2. Old bin 2 ([0.5, 0.75]): 6 pieces
    # below 0.6, 10 above (spreading evenly would split it 6.4 / 9.6).
    assert observer.histogram.tolist() == [1.0, 13 / 16, 3 / 16 + 6, 10 + 1]


def test_a_constant_keeps_a_zero_width_range_until_others_come():
    observer = GreedyHistogramObserver(bins=4)
    observer(torch.full((10,), 2.5))
    minmax = MinMaxObserver()
    minmax(torch.full((10,), 2.5))
    assert (observer.min_val.item(), observer.max_val.item()) == (2.5, 2.5)
    for ours, reference in zip(observer.calculate_qparams(), minmax.calculate_qparams(), strict=True):
        assert torch.equal(ours, reference)
    observer(torch.tensor([-1.0]))  # bins of 0.875 over [-1, 2.5]: the ten 2.5s are in the last
    assert observer.histogram.tolist() == [1.0, 0.0, 0.0, 10.0]


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(2000, generator=generator) * (1 + i) for i in range(4)]


def test_merging_equals_feeding_in_order_when_the_later_range_covers_the_earlier():
    batches = _batches()  # each wider than the last
    whole, first, second = GreedyHistogramObserver(), GreedyHistogramObserver(), GreedyHistogramObserver()
    for x in batches:
        whole(x)
    for x in batches[:3]:
        first(x)
    second(batches[3])  # its histogram is the one ``whole`` added the last batch as
    first.merge(second)
    assert (first.min_val, first.max_val) == (whole.min_val, whole.max_val)
    assert torch.allclose(first.histogram, whole.histogram)
    for ours, reference in zip(first.calculate_qparams(), whole.calculate_qparams(), strict=True):
        assert torch.equal(ours, reference)


def test_merging_a_wider_observer_keeps_every_count():
    batches = _batches()
    first, second, empty = GreedyHistogramObserver(), GreedyHistogramObserver(), GreedyHistogramObserver()
    first(batches[3])
    second(batches[0])
    first.merge(second)
    first.merge(empty)  # nothing to add
    assert first.histogram.sum().item() == pytest.approx(4000)
    assert (first.min_val.item(), first.max_val.item()) == (batches[3].min().item(), batches[3].max().item())
    with pytest.raises(ConfigError, match="cannot merge"):
        first.merge(GreedyHistogramObserver(bins=256))


def test_torch_aos_name_maps_here_and_fxqs_own_histogram_observer_stays():
    from fxq.compat import HistogramObserver as TorchAoName
    from fxq.compat import default_histogram_observer
    from fxq.torch_ao_objects import translate_observer

    factory = TorchAoName.with_args(qscheme=torch.per_tensor_symmetric, dtype=torch.qint8)
    assert factory.cls is GreedyHistogramObserver and factory.kwargs["symmetric"] is True
    assert default_histogram_observer().quant_max == 127
    assert translate_observer(HistogramObserver.with_args()).cls is HistogramObserver
