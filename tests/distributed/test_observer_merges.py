"""The observer changes distributed calibration relies on, in one process."""

import torch

from fxq.observers import HistogramObserver, MovingAverageMinMaxObserver


def test_moving_averages_merge_weighted_by_the_batches_each_saw():
    three, one = MovingAverageMinMaxObserver(), MovingAverageMinMaxObserver()
    for _ in range(3):
        three(torch.tensor([-4.0, 8.0]))
    one(torch.tensor([0.0, 4.0]))
    three.merge(one)
    assert (three.min_val.item(), three.max_val.item(), three.batches) == (-3.0, 7.0, 4)


def test_merging_a_histogram_into_an_empty_one_copies_its_bins_exactly():
    fed, empty = HistogramObserver(), HistogramObserver()
    fed(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    empty.merge(fed)
    assert torch.equal(empty.histogram, fed.histogram)
