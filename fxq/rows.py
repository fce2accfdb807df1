"""Rows describing what every node of a prepared or converted model became and why, read straight from the
node annotations the passes wrote (``fxq.annotation``). The demo and the dump tool print these rows."""

from __future__ import annotations

from dataclasses import dataclass

from torch.fx import GraphModule, Node

from fxq.annotation import NodeInfo
from fxq.observers import Observer

_SHOWN_OPS = ("call_module", "call_function", "call_method")


@dataclass(frozen=True)
class NodeRow:
    """One node: its name, op kind, target, concept, fused group, qconfig rule, status and output qparams."""

    name: str
    kind: str
    target: str
    concept: str
    fused_group: str
    qconfig_rule: str
    status: str
    scale: str
    zero_point: str


def inspect(gm: GraphModule, *, include_boundaries: bool = False) -> list[NodeRow]:
    """The rows of ``gm``'s op nodes in graph order; observers and quantize/dequantize nodes only if
    ``include_boundaries`` (the op rows already show the qparams they fix)."""
    modules = dict(gm.named_modules())
    rows = []
    for node in gm.graph.nodes:
        if node.op not in _SHOWN_OPS:
            continue
        record: NodeInfo = node.meta.get("fxq") or NodeInfo()
        boundary = record.lowered_to in ("quantize", "dequantize") or (
            node.op == "call_module" and isinstance(modules.get(node.target), Observer))
        if boundary and not include_boundaries:
            continue
        rows.append(_row(node, record))
    return rows


def _row(node: Node, record: NodeInfo) -> NodeRow:
    qparams = record.qparams.get("output", {})
    scale, zero_point = qparams.get("scale", ""), qparams.get("zero_point", "")
    if isinstance(scale, float):
        scale = f"{scale:.4g}"
    return NodeRow(
        name=node.name,
        kind=node.op.replace("call_", ""),
        target=_target(node),
        concept=record.concept or "",
        fused_group=record.fused_group or "",
        qconfig_rule=record.qconfig_rule or "",
        status=_status(record),
        scale=str(scale),
        zero_point=str(zero_point),
    )


def _status(record: NodeInfo) -> str:
    if record.float_reason:
        return f"float: {record.float_reason}"
    if record.lowered_to:
        return record.lowered_to
    if record.observers:
        return "observed (" + ", ".join(f"{role}" for role in sorted(record.observers)) + ")"
    return ""


def _target(node: Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module else name
