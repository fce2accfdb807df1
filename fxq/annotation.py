"""The typed record every pass writes on a node: ``node.meta["fxq"]``.

Passes talk to each other only through the graph and this record, and the dump tool reads exactly this record,
so anything a person may want to know about a decision (which rule chose it, why a node stayed float) is
written here by the pass that made the decision, never reconstructed later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from torch.fx import Node

META_KEY = "fxq"
# ``NodeInfo.precision`` of a quantized op whose output no int8 op reads: its kernel returns float directly.
FLOAT_OUTPUT = "int8, float output"


@dataclass(frozen=True)
class Stamp:
    """Provenance: which pass (and which rule of it, defined where) created or rewrote a node."""

    pass_name: str
    rule: str = ""
    where: str = ""

    def __str__(self) -> str:
        text = self.pass_name if not self.rule else f"{self.pass_name}:{self.rule}"
        return f"{text} ({self.where})" if self.where else text


@dataclass
class NodeInfo:
    """What fxq decided about one node, and why.

    Attributes:
        concept: the op concept this node computes ("linear", "relu", ...), or None if it is not a known op.
        module_path: the module the node came from ("" for the root), used by QConfigMapping rules.
        module_type: the type of that module (for call_module nodes, the called module's type).
        fused_from: names of the original nodes merged into this one by fusion.
        fused_group: a name shared by the nodes of one fused unit (e.g. "conv1+bn1+relu1").
        origin: the name of the traced node whose value this node computes (set by normalize; a fused node
            computes its last member's value; a kernel that replaces an op takes over the op's origin). Tools
            match quantized values to float ones through it.
        source_target: for a fused function call, the first fused op's target (``operator.add``), so that
            QConfigMapping object_type rules written for it still apply.
        qconfig: the QConfig chosen for the node, or None to leave it float.
        qconfig_rule: the QConfigMapping rule that chose ``qconfig``.
        precision: the numeric precision assigned (e.g. "int8"); None until assigned.
        observers: role -> observer module name ("output", "input0", "weight").
        statistics: role ("input0") -> the ``ChannelStatistics`` module recording that input's per-channel
            statistics during calibration, for convert-side passes (bias correction) that need more than a range.
        qparams: role -> dict(dtype, scale, zero_point, ...) fixed at convert time.
        lowered_to: what the node became ("quantize_per_tensor", "reference:linear", a kernel name...).
        float_reason: why the node was left in float, when it was.
        declined: near misses: (rule, reason) pairs for patterns that almost matched here.
        history: the passes that created or rewrote the node, oldest first.
    """

    concept: str | None = None
    module_path: str = ""
    module_type: type | None = None
    fused_from: tuple[str, ...] = ()
    fused_group: str | None = None
    source_target: Any = None
    origin: str | None = None
    qconfig: Any = None
    qconfig_rule: str | None = None
    precision: str | None = None
    observers: dict[str, str] = field(default_factory=dict)
    statistics: dict[str, str] = field(default_factory=dict)
    qparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    lowered_to: str | None = None
    float_reason: str | None = None
    declined: list[tuple[str, str]] = field(default_factory=list)
    history: list[Stamp] = field(default_factory=list)


def info(node: Node) -> NodeInfo:
    """The node's record, created empty on first access."""
    record = node.meta.get(META_KEY)
    if record is None:
        record = NodeInfo()
        node.meta[META_KEY] = record
    return record


def stamp(node: Node, pass_name: str, rule: str = "", where: str = "") -> NodeInfo:
    """Record that ``pass_name`` (by ``rule``) created or rewrote ``node``; returns the node's record."""
    record = info(node)
    record.history.append(Stamp(pass_name, rule, where))
    return record


def runs_int8(record: NodeInfo) -> bool:
    """Whether insert-observers quantized the op: its output is observed, or it returns float from int8 inputs
    (what ``lower`` quantizes, and what quantization-aware training rounds)."""
    return "output" in record.observers or record.precision == FLOAT_OUTPUT


def leave_float(node: Node, reason: str) -> None:
    """Mark a node as deliberately left in float, keeping the first reason given."""
    record = info(node)
    if record.float_reason is None:
        record.float_reason = reason


def copy_record(record: NodeInfo) -> NodeInfo:
    """An independent copy of a record. Its qconfig and types are immutable and shared; its containers are new."""
    return replace(record, observers=dict(record.observers), statistics=dict(record.statistics),
                   qparams={role: dict(values) for role, values in record.qparams.items()},
                   declined=list(record.declined), history=list(record.history))


def take_over(new: Node, old: Node) -> None:
    """``new`` replaces ``old`` (a lowering rule's kernel call for a reference op): it inherits what the op
    was (concept, fusion, qconfig and the rule that chose it, observers, qparams) and its history, so that dumps
    and comparisons can follow the op into the lowered graph. ``new``'s own stamps come after."""
    source, record = info(old), copy_record(info(old))
    target = info(new)
    record.lowered_to, record.float_reason = target.lowered_to, target.float_reason
    record.history = source.history + target.history
    record.declined = source.declined + target.declined
    new.meta[META_KEY] = record


def copy_graph_module(gm, share: Iterable[Any] = ()):
    """A deep copy of a GraphModule whose node records are copies too (``deepcopy`` alone shares node meta).

    Objects in ``share`` (e.g. observers that the copy only reads) are shared, not copied.
    """
    import copy

    result = copy.deepcopy(gm, {id(obj): obj for obj in share})
    for node in result.graph.nodes:
        if META_KEY in node.meta:
            node.meta = dict(node.meta)
            node.meta[META_KEY] = copy_record(node.meta[META_KEY])
    return result
