"""The last few training batches a QAT model saw, kept so batch-norm statistics can be measured again on them
(``fxq.qat.batch_norm_statistics``) with no data from the user. The recorder sits at the graph's inputs and
records in training mode only.

The batches are the user's data, so they stay in memory: pickling and ``fxq.save`` leave them out (a deep copy
shares them, so ``convert``'s working copy has them).
"""

from __future__ import annotations

import torch
from torch import nn

KEEP, BUDGET_BYTES = 4, 64 << 20


class RecentBatches(nn.Module):
    """Records the inputs of the last ``keep`` training-mode calls (detached), within ``budget_bytes`` in all;
    a call larger than the budget clears the record (``too_large``). ``pending``: batches were recorded since
    the statistics were last measured again. Returns nothing; evaluation records nothing."""

    _is_impure = True  # called for its record, not its value: dead-code elimination must keep the call

    def __init__(self, keep: int = KEEP, budget_bytes: int = BUDGET_BYTES) -> None:
        super().__init__()
        self.keep, self.budget_bytes = keep, budget_bytes
        self.too_large, self.pending = False, False
        self.__dict__["_batches"] = []

    def forward(self, *inputs) -> None:
        if not self.training:
            return None
        batch = tuple(x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs)
        self.too_large, self.pending = _bytes(batch) > self.budget_bytes, True
        kept = [] if self.too_large else [*self.batches, batch]
        while sum(_bytes(b) for b in kept) > self.budget_bytes or len(kept) > self.keep:
            kept.pop(0)
        self.__dict__["_batches"] = kept
        return None

    @property
    def batches(self) -> list[tuple]:
        return list(self.__dict__.get("_batches", []))

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_batches": []}

    def __deepcopy__(self, memo: dict) -> RecentBatches:
        copied = RecentBatches(self.keep, self.budget_bytes)
        copied.too_large, copied.pending, copied.training = self.too_large, self.pending, self.training
        copied.__dict__["_batches"] = self.batches
        memo[id(self)] = copied
        return copied

    def extra_repr(self) -> str:
        return f"keep={self.keep}, holding {len(self.batches)}" + (", last batch over budget" if self.too_large
                                                                    else "")


def _bytes(batch: tuple) -> int:
    return sum(x.numel() * x.element_size() for x in batch if isinstance(x, torch.Tensor))
