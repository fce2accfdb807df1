"""Mixed precision found for the user: ``fxq.tune`` searches per-layer precision plans under an accuracy budget,
with each layer's int8 and float times measured in context (``layer_times``), and reports how (``report``)."""

from fxq.tuning.layer_times import LayerTime, measure_layer_times
from fxq.tuning.report import LayerTuning, TunePoint, TuneReport
from fxq.tuning.search import TuneResult, tune

__all__ = ["LayerTime", "LayerTuning", "TunePoint", "TuneReport", "TuneResult", "measure_layer_times", "tune"]
