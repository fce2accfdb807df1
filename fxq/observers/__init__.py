"""fxq's observers: they watch float tensors during calibration and turn what they saw into qparams."""

from fxq.observers.base import Observer, ObserverFactory
from fxq.observers.entropy import EntropyObserver
from fxq.observers.fixed import SIGMOID_QPARAMS, TANH_QPARAMS, FixedQParamsObserver
from fxq.observers.greedy_histogram import GreedyHistogramObserver
from fxq.observers.histogram import HistogramObserver
from fxq.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from fxq.observers.mse import MSEObserver
from fxq.observers.per_channel_mse import PerChannelMSEObserver
from fxq.observers.percentile import PercentileObserver
from fxq.observers.placeholder import PlaceholderObserver

__all__ = [
    "EntropyObserver", "FixedQParamsObserver", "GreedyHistogramObserver", "HistogramObserver", "MSEObserver",
    "MinMaxObserver", "MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver", "Observer",
    "ObserverFactory", "PerChannelMSEObserver", "PerChannelMinMaxObserver", "PercentileObserver",
    "PlaceholderObserver", "SIGMOID_QPARAMS", "TANH_QPARAMS",
]
