"""fake_quantize: make an observed graph trainable through int8 rounding (quantization-aware training).

Runs last in ``fxq.prepare_qat``, after ``insert-observers`` placed observers exactly as for post-training
quantization (one placement, decided by the same backend table). Every observer becomes a ``FakeQuantize``
wrapping it, under the same name, so the node records still point at it; every conv/linear whose weight ``lower``
will quantize rounds that weight in its forward: its layer becomes the ``fxq.qat.modules`` form (inside a fused
module too; a conv or linear kept with its batch norm trains through the folded weight's rounding,
``QATLayerBn``), and a linear/conv call with a constant weight (an exported graph's layers) reads it through a
``WeightFakeQuantize`` node. Every batch norm becomes its ``fxq.qat.batch_norm`` form, whose statistics
``freeze_bn_stats`` can freeze for good, and a graph with batch norms records its last training batches at its
inputs (``fxq.qat.recent_batches``) for ``reestimate-batch-norm`` at convert. ``qat-to-float`` undoes the weight side at convert. An average pool's output rounds
with its input's qparams unless it is far narrower, the choice ``lower`` makes (``FakeQuantize.share_unless_narrower``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule

from fxq.annotation import info, runs_int8
from fxq.backends import Observation, get_backend
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import LAYER_BN, FusedModule
from fxq.observers import Observer
from fxq.pass_registry import register_pass
from fxq.qat.batch_norm import QAT_BATCH_NORM, freezable
from fxq.qat.fake_quantize import FakeQuantize, WeightFakeQuantize
from fxq.qat.modules import has_qat_form, to_qat
from fxq.qat.recent_batches import RecentBatches, record_inputs
from fxq.rewriter import Rewriter

NAME = "fake-quantize"
_OPS = ("call_module", "call_function", "call_method")


@register_pass
@dataclass(frozen=True)
class FakeQuantizePass(GraphPass):
    """Observers -> FakeQuantize; quantized conv/linear weights -> fake-quantized in the forward."""

    name = NAME
    requires = frozenset({"observed"})
    provides = frozenset({"fake_quantized"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        rw = Rewriter(gm, self.name)
        called = {node.target for node in gm.graph.nodes if node.op == "call_module"}
        for name in sorted(called):  # the graph's observers (not the one inside an explicit FakeQuantize)
            module = rw.modules[name]
            if isinstance(module, Observer) and not isinstance(module, FakeQuantize):
                rw.set_module(name, FakeQuantize(module))
        norms = [name for name, module in gm.named_modules()
                 if type(module) in QAT_BATCH_NORM and module.running_mean is not None]
        for name in norms:
            rw.set_module(name, freezable(rw.modules[name]))
        if norms:
            record_inputs(rw, RecentBatches())
        backend = get_backend(ctx.backend)
        for node in list(gm.graph.nodes):
            record = info(node)
            support = backend.support(record.concept) if node.op in _OPS else None
            if support is not None and support.observation is Observation.NARROWING and "input0" in record.observers:
                rw.modules[record.observers["output"]].share_unless_narrower(rw.modules[record.observers["input0"]])
            if support is None or not support.weighted or not runs_int8(record) or record.qconfig.weight is None:
                continue
            weight_fake_quant = WeightFakeQuantize(record.qconfig, support, node.name)
            if node.op == "call_module":
                self._train_module(rw, node.target, weight_fake_quant)
            else:
                self._train_call(rw, node, support.weight_arg, weight_fake_quant)
        return gm

    @staticmethod
    def _train_module(rw: Rewriter, target: str, weight_fake_quant: WeightFakeQuantize) -> None:
        module = rw.modules[target]
        inside = isinstance(module, FusedModule) and not isinstance(module, LAYER_BN)  # a layer+bn trains whole
        path = f"{target}.0" if inside else target
        layer = module[0] if inside else module
        if has_qat_form(layer):
            rw.set_module(path, to_qat(layer, weight_fake_quant))

    @staticmethod
    def _train_call(rw: Rewriter, node, weight_arg: int | None, weight_fake_quant: WeightFakeQuantize) -> None:
        weight = node.args[weight_arg] if weight_arg is not None and len(node.args) > weight_arg else None
        if weight is None or getattr(weight, "op", None) != "get_attr":
            return
        name = rw.unique_name(f"{node.name}_weight_fake_quant")
        rw.set_module(name, weight_fake_quant)
        node.replace_input_with(weight, rw.insert("call_module", name, (weight,), before=node, like=node))
