"""The inspection tool's Python side: rows describing every node (``inspect``), every observer
(``observer_summary``), and the per-layer error against the float model (``compare``)."""

from fxq.dump.compare import Comparison, LayerError, compare
from fxq.dump.observer_summary import ObserverRow, observer_summary
from fxq.dump.rows import NodeRow, inspect

__all__ = ["Comparison", "LayerError", "NodeRow", "ObserverRow", "compare", "inspect", "observer_summary"]
