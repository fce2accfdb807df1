"""Per-channel statistics of a value seen during calibration, for passes that need more than a quantization range.

``ChannelStatistics`` is an identity module that a prepare-side pass puts on a value; a convert-side pass reads
it and removes it. Bias correction reads the mean of a layer's input; SmoothQuant-style migration needs the
per-channel absolute maximum and E[x^2]. Sums are kept in float64, so means over many batches do not drift.
"""

from __future__ import annotations

import torch
from torch import nn

from fxq.annotation import info
from fxq.errors import CalibrationError, ConfigError


class ChannelStatistics(nn.Module):
    """Identity forward that records, per channel along ``axis``, the running sum, sum of squares, min and max, and
    how many values each channel saw.

    Args:
        axis: the channel dimension. Negative axes count from the end, which names the channel of batched and
            unbatched inputs alike (-3 for a conv2d's (N, C, H, W) or (C, H, W), -1 for a linear's (..., F)).

    State is buffers (empty until the first batch), so ``state_dict``, ``load_state_dict`` and ``deepcopy`` keep
    it. ``merge`` folds in another instance's state, for calibration split across processes.
    """

    _fxq_leaf = True

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis
        self.node_name = "<unnamed>"
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        for name in ("sum", "sum_of_squares", "min_val", "max_val"):
            self.register_buffer(name, torch.empty(0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Record ``x`` and return it unchanged."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"channel statistics of node {self.node_name!r} got a {what} value; they only "
                              "record float tensors")
        if x.numel():
            self._record(x.detach())
        return x

    def _record(self, x: torch.Tensor) -> None:
        axis = self.axis % x.dim()
        dims = [d for d in range(x.dim()) if d != axis]
        total = x.sum(dims, dtype=torch.float64)
        squares = (x * x).sum(dims, dtype=torch.float64)
        low, high = x.amin(dims).double(), x.amax(dims).double()
        self._add(total, squares, low, high, x.numel() // x.shape[axis], "this batch")

    def _add(self, total, squares, low, high, count: int, what: str) -> None:
        if self.has_data:
            if total.shape != self.sum.shape:
                raise ConfigError(f"channel statistics of node {self.node_name!r} recorded {self.sum.numel()} "
                                  f"channels on axis {self.axis}, but {what} has {total.numel()}")
            total, squares = self.sum + total, self.sum_of_squares + squares
            low, high = torch.minimum(self.min_val, low), torch.maximum(self.max_val, high)
        self.sum, self.sum_of_squares, self.min_val, self.max_val = total, squares, low, high
        self.count = self.count + count

    def merge(self, other: ChannelStatistics) -> None:
        """Fold ``other``'s state into this one: the result is what one run over both runs' batches records.

        Raises:
            ConfigError: ``other`` watches another axis, or saw another number of channels.
        """
        if not isinstance(other, ChannelStatistics) or other.axis != self.axis:
            raise ConfigError(f"cannot merge {other!r} into the channel statistics of node {self.node_name!r} "
                              f"(axis {self.axis})")
        if other.has_data:
            self._add(other.sum.clone(), other.sum_of_squares.clone(), other.min_val.clone(),
                      other.max_val.clone(), int(other.count), "the statistics merged in")

    @property
    def has_data(self) -> bool:
        return int(self.count) > 0

    def _require_data(self) -> None:
        if not self.has_data:
            raise CalibrationError(f"channel statistics of node {self.node_name!r} saw no data; run calibration "
                                   "data through the prepared model before convert (and check that it reaches "
                                   "this node)")

    @property
    def mean(self) -> torch.Tensor:
        """E[x] per channel (float64)."""
        self._require_data()
        return self.sum / self.count

    @property
    def second_moment(self) -> torch.Tensor:
        """E[x^2] per channel (float64)."""
        self._require_data()
        return self.sum_of_squares / self.count

    @property
    def minimum(self) -> torch.Tensor:
        self._require_data()
        return self.min_val

    @property
    def maximum(self) -> torch.Tensor:
        self._require_data()
        return self.max_val

    @property
    def absmax(self) -> torch.Tensor:
        """max |x| per channel."""
        return torch.maximum(self.minimum.abs(), self.maximum.abs())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("sum", "sum_of_squares", "min_val", "max_val"):  # they take their length from the saved state
            if prefix + name in state_dict:
                getattr(self, name).resize_(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        seen = f", channels={self.sum.numel()}, count={int(self.count)}" if self.has_data else ", no data"
        return f"axis={self.axis}{seen}"


def drop_statistics(rw) -> None:
    """Remove every ``ChannelStatistics`` call and module from ``rw``'s graph (a ``fxq.rewriter.Rewriter``) and
    the records naming them: they only watch calibration, and a native lowering rule cannot match through one."""
    for node in list(rw.gm.graph.nodes):
        if node.op == "call_module" and isinstance(rw.modules.get(node.target), ChannelStatistics):
            node.replace_all_uses_with(node.args[0])
            rw.gm.graph.erase_node(node)
            rw.gm.delete_submodule(node.target)
            del rw.modules[node.target]
    for node in rw.gm.graph.nodes:
        info(node).statistics.clear()
