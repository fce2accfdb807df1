"""fxq's observers: they watch float tensors during calibration and turn what they saw into qparams."""

from fxq.observers.base import Observer, ObserverFactory
from fxq.observers.fixed import SIGMOID_QPARAMS, TANH_QPARAMS, FixedQParamsObserver
from fxq.observers.histogram import HistogramObserver
from fxq.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from fxq.observers.placeholder import PlaceholderObserver

__all__ = [
    "FixedQParamsObserver", "HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver", "Observer", "ObserverFactory", "PerChannelMinMaxObserver",
    "PlaceholderObserver", "SIGMOID_QPARAMS", "TANH_QPARAMS",
]
