"""assign_qconfig: choose each op node's QConfig from the QConfigMapping and record which rule chose it.

Needs a normalized (usually fused) graph whose nodes carry their module scope, and ``ctx.qconfig_mapping``.
Afterwards every op node's annotation holds ``qconfig`` (None: stay float) and ``qconfig_rule``. A mapping rule
that names a module the model does not have is an error, never a silent no-op. Where only the global qconfig
applies, ``ctx.recipe`` may keep an op float (``fxq.recipes``); the rule then reads ``recipe(<name>)``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from torch.fx import GraphModule, Node

from fxq.annotation import info, leave_float
from fxq.errors import ConfigError
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import FusedModule
from fxq.ops import aten_name, concept_of_key, key_of
from fxq.pass_registry import register_pass
from fxq.rms_norm_scope import is_rms_norm

_OPS = ("call_module", "call_function", "call_method")


@register_pass
@dataclass(frozen=True)
class AssignQConfig(GraphPass):
    """Resolve the QConfigMapping for every op node (torch.ao's precedence; see QConfigMapping)."""

    name = "assign-qconfig"
    requires = frozenset({"normalized"})
    provides = frozenset({"qconfig_assigned"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        mapping = ctx.qconfig_mapping
        if mapping is None:
            raise ConfigError("assign-qconfig needs a QConfigMapping: pass one to prepare(), e.g. "
                              "fxq.get_default_qconfig_mapping('x86')")
        source = ctx.original if ctx.original is not None else gm
        mapping.validate({name for name, _ in source.named_modules()})
        modules = dict(gm.named_modules())
        seen: dict[tuple[str, object], int] = defaultdict(int)
        rule_objects = _rule_objects(mapping)
        for node in gm.graph.nodes:
            if node.op not in _OPS:
                continue
            path, module_type, function, order_path, order_object = _scope(node, modules, rule_objects)
            index = seen[(order_path, order_object)]
            seen[(order_path, order_object)] += 1
            resolution = mapping.resolve(module_path=path, module_type=module_type, function=function,
                                         order_key=(order_path, order_object, index))
            record = info(node)
            record.qconfig, record.qconfig_rule = resolution.qconfig, resolution.rule
            recipe_reason = None if ctx.recipe is None else ctx.recipe.float_reason(record.concept,
                                                                                     record.module_type)
            if recipe_reason and resolution.rule == "global" and resolution.qconfig is not None:
                record.qconfig, record.qconfig_rule = None, f"recipe({ctx.recipe.name})"
                what = f"{record.concept or 'this op'} in {record.module_type.__name__}" \
                    if is_rms_norm(record.module_type) else record.concept
                leave_float(node, f"the {ctx.recipe.name} recipe keeps {what} float: {recipe_reason}")
            elif resolution.qconfig is None:
                leave_float(node, f"qconfig is None (rule {resolution.rule})")
        return gm



def _scope(node: Node, modules: dict, rule_objects: dict) -> tuple[str, type | None, object, str, object]:
    """(module path, module type, function, order path, order object) as QConfigMapping resolution wants them.

    A fused module is matched by its first member's type (``nn.Conv2d`` rules apply to a fused conv+relu).
    Exported graphs spell ops in aten, so their nodes are seen as a traced graph's would be: the op a module
    exists to compute (``aten.linear`` inside an ``nn.Linear``) as that module's call, and any other aten op as
    the function a rule names for the same concept (``aten.add`` as the ``torch.add`` of a rule).
    """
    record = info(node)
    if node.op == "call_module":
        module = modules[node.target]
        module_type = type(module.op) if isinstance(module, FusedModule) else type(module)
        parent = record.module_path.rpartition(".")[0]
        return record.module_path, module_type, None, parent, module_type
    target = record.source_target if record.source_target is not None else node.target
    if aten_name(target) is not None:
        if record.concept is not None and record.module_type is not None and \
                concept_of_key(("module", record.module_type)) == (record.concept, False):
            parent = record.module_path.rpartition(".")[0]
            return record.module_path, record.module_type, None, parent, record.module_type
        target = rule_objects.get(record.concept, target)
    return record.module_path, record.module_type, target, record.module_path, target


def _rule_objects(mapping) -> dict[str, object]:
    """concept -> the function a rule of ``mapping`` names for it (the first, if several do)."""
    found: dict[str, object] = {}
    keys = list(mapping.object_type_qconfigs) + [kind for _, kind, _ in mapping.module_name_object_type_order_qconfigs]
    for key in keys:
        if isinstance(key, type):
            continue
        concept = concept_of_key(key_of(key))
        if concept is not None:
            found.setdefault(concept[0], key)
    return found
