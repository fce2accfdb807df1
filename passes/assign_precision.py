"""assign_precision: give the layers a ``PrecisionPlan`` names their precision (``fxq.precision``).

Runs after ``assign-qconfig`` and before ``insert-observers``, and does nothing without a plan
(``ctx.precision_plan``). For each op node of a planned module it sets the qconfig that precision stands for
and ``qconfig_rule = "precision(<precision>, <source>)"``, so the dump says who decided (``insert-observers``
then records the precision the kernels run, as for any qconfig). A plan replaces what the global qconfig or a recipe chose; an explicit QConfigMapping rule for the node
(a module name, type or regex) wins, and the node's record says the plan was declined there. A precision with
no kernel for the layer (fp16 for a convolution), ``int16`` on a backend with kernels (x86, qnnpack: none takes
16-bit activations; the reference backend simulates it) and a path the model does not have are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule

from fxq.annotation import info, leave_float
from fxq.errors import ConfigError
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_registry import register_pass
from fxq.precision import LINEAR_CONCEPTS, LINEAR_ONLY, check_kernel, decided_by_default, qconfig_for
from fxq.qconfig_mapping import with_suggestion

_OPS = ("call_module", "call_function", "call_method")


@register_pass
@dataclass(frozen=True)
class AssignPrecision(GraphPass):
    """Apply ``ctx.precision_plan`` (module path -> precision) on top of the assigned qconfigs."""

    name = "assign-precision"
    requires = frozenset({"qconfig_assigned"})
    provides = frozenset({"precision_assigned"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        plan = ctx.precision_plan
        if plan is None or not plan.assignments:
            return gm
        source = ctx.original if ctx.original is not None else gm
        names = {name for name, _ in source.named_modules()}
        for path in plan.assignments:
            if path not in names:
                raise ConfigError(f"the precision plan names module {with_suggestion(path, names)}, which the model "
                                  "does not have")
        int8 = ctx.qconfig_mapping.global_qconfig if ctx.qconfig_mapping is not None else None
        for node in gm.graph.nodes:
            record = info(node)
            precision = plan.assignments.get(record.module_path) if node.op in _OPS else None
            if precision is None or record.concept is None:
                continue
            if not decided_by_default(record.qconfig_rule):
                record.declined.append(("assign-precision",
                                        f"the plan's {precision} gives way to rule {record.qconfig_rule}"))
                continue
            if precision in LINEAR_ONLY and record.concept not in LINEAR_CONCEPTS:
                raise ConfigError(f"the precision plan gives module {record.module_path!r} ({record.concept}, node "
                                  f"{node.name!r}) precision {precision!r}, which has a CPU kernel for Linear "
                                  "layers only; use 'int8', 'w4a8' or 'float' there")
            check_kernel(precision, ctx.backend, f"the precision plan gives module {record.module_path!r} "
                                                 f"({record.concept}, node {node.name!r})")
            record.qconfig = qconfig_for(precision, ctx.backend, int8)
            record.qconfig_rule = f"precision({precision}, {plan.source})"
            record.float_reason = None
            if record.qconfig is None:
                leave_float(node, f"the precision plan ({plan.why(record.module_path)}) keeps it float")
        return gm
