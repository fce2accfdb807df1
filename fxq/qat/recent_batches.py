"""The last few batches a prepared model saw, kept so convert can run the model again with no data from the
user: QAT's training batches, on which batch-norm statistics are measured again (``fxq.qat.batch_norm_statistics``),
and post-training calibration batches, on which ``sensitivity-ranges`` measures what each value's error costs at
the output. The recorder sits at the graph's inputs and records calls in one mode: training for QAT, evaluation
for calibration.

The batches are the user's data, so they stay in memory: pickling and ``fxq.save`` leave them out (a deep copy
shares them, so ``convert``'s working copy has them).
"""

from __future__ import annotations

import torch
from torch import nn

from fxq.rewriter import drop_unused_submodules

KEEP, BUDGET_BYTES = 4, 64 << 20


class RecentBatches(nn.Module):
    """Records the inputs of the last ``keep`` calls made in ``mode`` ("training" or "eval") (detached), within
    ``budget_bytes`` in all; a call larger than the budget clears the record (``too_large``). ``pending``: batches
    were recorded since the statistics were last measured again. Returns nothing; calls in the other mode record
    nothing."""

    _is_impure = True  # called for its record, not its value: dead-code elimination must keep the call
    mode = "training"  # the class default: recorders saved before there was a choice recorded training batches

    def __init__(self, keep: int = KEEP, budget_bytes: int = BUDGET_BYTES, mode: str = "training") -> None:
        super().__init__()
        self.keep, self.budget_bytes, self.mode = keep, budget_bytes, mode
        self.too_large, self.pending = False, False
        self.__dict__["_batches"] = []

    def forward(self, *inputs) -> None:
        if self.training != (self.mode == "training"):
            return None
        self.too_large, self.pending = _bytes(inputs) > self.budget_bytes, True
        if self.too_large:  # measured before copying: a batch over budget is never kept, so never copied
            self.__dict__["_batches"] = []
            return None
        kept = [*self.batches, tuple(x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs)]
        while sum(_bytes(b) for b in kept) > self.budget_bytes or len(kept) > self.keep:
            kept.pop(0)
        self.__dict__["_batches"] = kept
        return None

    @property
    def batches(self) -> list[tuple]:
        return list(self.__dict__.get("_batches", []))

    def keep_batches(self, batches: list[tuple]) -> None:
        """Hold ``batches`` instead of what this recorder recorded (distributed calibration gives every rank the
        same ones)."""
        self.__dict__["_batches"] = list(batches)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_batches": []}

    def __deepcopy__(self, memo: dict) -> RecentBatches:
        copied = RecentBatches(self.keep, self.budget_bytes, self.mode)
        copied.too_large, copied.pending, copied.training = self.too_large, self.pending, self.training
        copied.__dict__["_batches"] = self.batches
        memo[id(self)] = copied
        return copied

    def extra_repr(self) -> str:
        over = ", last batch over budget" if self.too_large else ""
        return f"{self.mode}, keep={self.keep}, holding {len(self.batches)}{over}"


def record_inputs(rw, recorder: RecentBatches, stem: str = "recent_batches") -> None:
    """Put ``recorder`` on the graph's inputs (a ``fxq.rewriter.Rewriter``'s graph), right after the last one."""
    inputs = [node for node in rw.gm.graph.nodes if node.op == "placeholder"]
    name = rw.unique_name(stem)
    rw.set_module(name, recorder)
    if inputs:
        rw.insert("call_module", name, tuple(inputs), after=inputs[-1])
    else:
        rw.insert("call_module", name, (), before=next(iter(rw.gm.graph.nodes)))


def drop_recorders(gm) -> None:
    """Remove every recorder call and module from ``gm``: a converted model must not keep the user's data, nor
    record more of it."""
    for node in recorders(gm):
        gm.graph.erase_node(node)
    drop_unused_submodules(gm)


def recorders(gm) -> list:
    """The call nodes of ``gm``'s RecentBatches recorders."""
    modules = dict(gm.named_modules())
    return [node for node in gm.graph.nodes
            if node.op == "call_module" and isinstance(modules.get(node.target), RecentBatches)]


def _bytes(batch: tuple) -> int:
    return sum(x.numel() * x.element_size() for x in batch if isinstance(x, torch.Tensor))
