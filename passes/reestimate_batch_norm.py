"""reestimate_batch_norm: the first convert pass of a QAT model with batch norms: if training ran since their
statistics were last measured, measure them again with the trained weights on the batches training last saw
(``fxq.qat.batch_norm_statistics``, which says why); then drop the batch recorder.

Norms the user froze (``freeze_bn_stats``) keep their statistics. What happened is kept in
``converted.meta["fxq_batch_norm"]``; an ``FxqWarning`` says when there was nothing to measure on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch.fx import GraphModule

from fxq.errors import ConfigError, FxqWarning
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.qat.batch_norm_statistics import reestimate_bn_stats
from fxq.qat.recent_batches import drop_recorders, recorders

META_KEY = "fxq_batch_norm"


@register_pass
@dataclass(frozen=True)
class ReestimateBatchNorm(GraphPass):
    """Batch-norm statistics measured again on the recorded training batches; the recorder removed."""

    name = "reestimate-batch-norm"
    requires = frozenset({"fake_quantized"})
    provides = frozenset({"batch_norm_reestimated"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        modules = dict(gm.named_modules())
        calls = recorders(gm)
        if not calls:
            return gm
        if any(modules[node.target].pending for node in calls):
            gm.recompile()  # convert's working copy runs: its forward is installed by the passes' recompiles
            try:
                gm.meta[META_KEY] = reestimate_bn_stats(gm)
            except ConfigError as err:
                gm.meta[META_KEY] = f"batch-norm statistics kept as training left them: {err}"
                warnings.warn(f"{gm.meta[META_KEY]}; they may not match the trained weights", FxqWarning,
                              stacklevel=2)
        drop_recorders(gm)
        gm.recompile()
        return gm
