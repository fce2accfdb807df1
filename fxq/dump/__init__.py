"""The inspection tool's Python side: rows describing every node (``inspect``), every observer
(``observer_summary``), and the per-layer error against the float model (``compare``)."""

from fxq.dump.rows import NodeRow, inspect

__all__ = ["NodeRow", "inspect"]
