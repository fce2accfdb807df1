"""record_calibration_sample: keep the last calibration batches (a few MB at most) for convert to run again.

Needs an observed graph. Afterwards a ``RecentBatches`` recorder in evaluation mode sits on the graph's inputs
and keeps the last ``keep`` calibration batches within ``budget_bytes``; ``sensitivity-ranges`` (convert) reads
them and removes it (``lower`` removes one it did not read). They are the user's data, so they stay in memory:
pickling and ``fxq.save`` leave them out, and a prepared model loaded from a file converts without them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule

from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.qat.recent_batches import RecentBatches, record_inputs
from fxq.rewriter import Rewriter

NAME = "record-calibration-sample"


@register_pass
@dataclass(frozen=True)
class RecordCalibrationSample(GraphPass):
    """Record the last calibration batches at the graph's inputs (see the module docstring).

    Args:
        keep: how many batches to keep.
        budget_bytes: the most they may hold together; a larger batch is not kept.
    """

    name = NAME
    requires = frozenset({"observed"})
    provides = frozenset({"calibration_sample"})
    keep: int = 1
    budget_bytes: int = 8 << 20

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        record_inputs(Rewriter(gm, self.name), RecentBatches(self.keep, self.budget_bytes, mode="eval"),
                      "calibration_sample")
        return gm
