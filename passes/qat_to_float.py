"""qat_to_float: the first convert pass of a QAT-prepared graph: trained layers back to their float forms.

``fake-quantize`` made weights round in the forward pass (and batch norms freezable); ``lower`` quantizes float layers' weights itself (with
the same function), so it gets them back as float layers holding the trained parameters, and the weight
fake-quantize nodes of exported graphs' linear/conv calls are bypassed. Activation ``FakeQuantize`` modules stay:
they are observers, and ``lower`` reads the qparams training last used from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule

from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.qat.fake_quantize import WeightFakeQuantize
from fxq.qat.modules import is_qat, to_float
from fxq.rewriter import Rewriter, drop_unused_submodules


@register_pass
@dataclass(frozen=True)
class QatToFloat(GraphPass):
    """QAT layers -> float layers with the trained weights; weight fake-quantize nodes bypassed."""

    name = "qat-to-float"
    requires = frozenset({"fake_quantized"})
    provides = frozenset({"trained_layers_float"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        rw = Rewriter(gm, self.name)
        done: list[str] = []
        for name, module in list(gm.named_modules()):
            if is_qat(module) and not any(name.startswith(f"{parent}.") for parent in done):
                rw.set_module(name, to_float(module))
                done.append(name)
        for node in list(gm.graph.nodes):
            if node.op == "call_module" and isinstance(rw.modules.get(node.target), WeightFakeQuantize):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        drop_unused_submodules(gm)
        gm.recompile()
        return gm
