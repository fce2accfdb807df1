"""sensitivity_ranges: widen an activation's range where the model's output error asks for it.

Runs in convert after the recipe's passes and before ``lower``, on a model whose calibration batch
``record-calibration-sample`` kept. ``fxq.output_sensitivity`` measures, on that batch, what an error in each
observed value costs at the output, as a function of the value. For every per-tensor histogram observer whose
extremes cost the output more than its values do on average (``TAIL_COST`` times) and that clips them (its chosen
range is narrower than what calibration saw), the same least-error search then runs on the histogram with each
bin's count multiplied by that cost. When the resulting range is wider than the observer's and lowers the
output-weighted expected error by at least ``min_gain`` (a ratio), the observer is replaced, in the converted
graph only, by a ``CoveringObserver`` over both ranges; the value's history says by how much. Ranges are only
ever widened: a clip that the output does not mind stays. The recorder is removed either way.

Without a kept batch (a prepared model loaded from a file, or a batch over the recorder's budget) or when the
replay cannot differentiate the model (an op without a gradient), ranges stay as the observers chose and
``converted.meta["fxq_sensitivity"]`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule

from fxq.annotation import stamp
from fxq.graph_pass import GraphPass, PassContext
from fxq.observers.covering import CoveringObserver
from fxq.observers.histogram import expected_error, least_error_range
from fxq.observers.histogram_base import HistogramCollector
from fxq.output_sensitivity import output_weights
from fxq.pass_registry import register_pass
from fxq.qat.recent_batches import drop_recorders, recorders

NAME = "sensitivity-ranges"
META_KEY = "fxq_sensitivity"
# Extremes that cost the output less than this many times its average cost per value leave the range alone
# without a search (on 60 fuzzed models, 4 of 900 ranges widened, all with extremes at least 2.8x).
TAIL_COST = 2.0


@register_pass
@dataclass(frozen=True)
class SensitivityRanges(GraphPass):
    """Widen clipped activation ranges by their cost at the output (see the module docstring).

    Args:
        min_gain: widen only when the wider range's output-weighted expected error is at least this many times
            lower than the observer's own range's.
    """

    name = NAME
    requires = frozenset({"observed"})
    min_gain: float = 1.25

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        modules = dict(gm.named_modules())
        samples = [modules[node.target] for node in recorders(gm) if modules[node.target].mode == "eval"]
        if not samples:  # nothing asked for it (quantization-aware training, or a pipeline without the recorder)
            return gm
        batches = [batch for sample in samples for batch in sample.batches]
        observers = {name: module for name, module in modules.items() if _searches_a_range(module)}
        if not batches:
            gm.meta[META_KEY] = ("ranges as the observers chose: no calibration batches were kept (a prepared model "
                                 "loaded from a file, or batches over the recorder's budget)")
        elif observers:
            try:
                weights = output_weights(gm, observers, batches)
            except (RuntimeError, NotImplementedError) as err:  # an op without a gradient: the ranges stand
                gm.meta[META_KEY] = f"ranges as the observers chose: the model could not be differentiated ({err})"
            else:
                widened = [self._widen(gm, name, observers[name], weight) for name, weight in weights.items()]
                gm.meta[META_KEY] = f"{sum(widened)} of {len(observers)} histogram activation ranges widened"
        drop_recorders(gm)
        return gm

    def _widen(self, gm: GraphModule, name: str, observer: HistogramCollector, weight: torch.Tensor) -> bool:
        seen = observer.histogram.double()
        average = float((seen * weight).sum() / seen.sum())
        if max(float(weight[0]), float(weight[-1])) <= TAIL_COST * average:
            return False  # the output pays little more for the extremes than on average: the own choice stands
        low, high, levels = float(observer.min_val), float(observer.max_val), observer.quant_max - observer.quant_min
        own_lo, own_hi = (float(end) for end in observer.observed_range())
        if own_lo <= low and own_hi >= high:
            return False  # nothing clipped
        counts = seen * weight
        lo, hi = least_error_range(counts, low, high, levels, observer.symmetric, getattr(observer, "search_step", 64))
        if lo >= own_lo and hi <= own_hi:
            return False
        lo, hi = min(lo, own_lo), max(hi, own_hi)
        own, wider = (expected_error(counts, low, high, levels, *ends) for ends in ((own_lo, own_hi), (lo, hi)))
        if own < wider * self.min_gain:
            return False
        reason = (f"range [{own_lo:.4g}, {own_hi:.4g}] widened to [{lo:.4g}, {hi:.4g}]: at the output, the clip "
                  f"cost {own / max(wider, 1e-300):.1f}x the error of the wider range")
        gm.add_submodule(name, CoveringObserver(observer, lo, hi, reason))  # the prepared model keeps its own
        for node in gm.graph.nodes:
            if node.op == "call_module" and node.target == name:
                stamp(node.args[0], self.name, reason)
        return True


def _searches_a_range(module) -> bool:
    """A per-tensor histogram observer that saw data: one that may clip."""
    return isinstance(module, HistogramCollector) and not module.per_channel and module.has_data
