"""One row per node saying what fxq made of it and why, read from the node annotations the passes wrote
(``fxq.annotation``): its op, fused group, qconfig and the QConfigMapping rule that chose it, dtypes, the range
calibration saw, the qparams, what it was lowered to (or why it stayed float) and, given a comparison, the error
it adds. Every output format of the dump tool renders these rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule, Node

from fxq.annotation import FLOAT_OUTPUT, NodeInfo
from fxq.observers import Observer
from fxq.qat.recent_batches import RecentBatches
from fxq.shapes import VALUE_KEY, TensorInfo
from fxq.statistics import ChannelStatistics

_OPS = ("call_module", "call_function", "call_method")


@dataclass(frozen=True)
class NodeRow:
    """What one node became, and why. Per-channel qparams are lists; absent facts are None.

    Attributes:
        name, kind, target: the node ("module", "function" or "method") and what it calls.
        concept: the op concept ("linear", "add"...), None if fxq does not know the op.
        fused_group: the names of the nodes fused into this one, joined by "+".
        qconfig: the qconfig, summarised ("act HistogramObserver quint8; weight PerChannelMinMaxObserver qint8").
        rule: the QConfigMapping rule that chose the qconfig ("global", "module_name('fc')", ...).
        input_dtypes, output_dtype: from the run the rows were made with (or the one prepare recorded).
        observed_min, observed_max: the range calibration showed the output's observer.
        scale, zero_point, qdtype: the output's qparams (the ones convert chose, or will choose).
        weight: the weight's quantization, summarised, with the reason when it is per tensor by necessity.
        status: the kernel or reference op it became, "float: <why>", or where it stands before convert.
        sqnr_db, own_sqnr_db: from ``fxq.compare``: SQNR of this value against the float model's, and of the
            error this node adds on top of its inputs' (see ``fxq.dump.compare``).
        origin: the traced node whose value this node computes.
        module_path: the module the node came from ("" for the root); the HTML page groups nodes by it.
        made_by: the passes and rules that created or rewrote the node, oldest first, each with the file:line
            of the rule ("fuse:op_relu (fuse.py:167)"), plugins' rules as fxq's own.
        near_misses: rules that almost matched here, and why they did not ("op_relu: relu is a call function...").
        inputs: the names of the nodes it reads (the graph's edges).
        category: "quantized", "float", "boundary" (observer, quantize, dequantize), "io" (inputs, outputs,
            constants) or "pending" (not decided yet: a traced or fused graph); what the graph views colour.
    """

    name: str
    kind: str
    target: str
    concept: str | None = None
    fused_group: str | None = None
    qconfig: str | None = None
    rule: str | None = None
    input_dtypes: tuple[str, ...] = ()
    output_dtype: str | None = None
    observed_min: Any = None
    observed_max: Any = None
    scale: Any = None
    zero_point: Any = None
    qdtype: str | None = None
    weight: str | None = None
    status: str = ""
    sqnr_db: float | None = None
    own_sqnr_db: float | None = None
    origin: str | None = None
    module_path: str = ""
    made_by: tuple[str, ...] = ()
    near_misses: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    category: str = "pending"


# Modules that watch calibration rather than compute: observers, and the recorders some passes add.
_WATCHERS = (Observer, ChannelStatistics, RecentBatches)


def inspect(gm: GraphModule, *, include_boundaries: bool = False, all_nodes: bool = False,
            values: dict[str, Any] | None = None, comparison=None) -> list[NodeRow]:
    """The rows of ``gm``'s op nodes in graph order.

    Args:
        include_boundaries: also list observers and quantize/dequantize nodes (op rows already show the
            qparams those fix).
        all_nodes: every node, boundaries, inputs, constants and the output included (for graph views).
        values: node name -> ``TensorInfo`` (or tuple of them) from a run (``fxq.shapes.record_values``), for
            the dtypes; without it the dtypes prepare recorded are shown, for graphs not yet lowered.
        comparison: a ``fxq.compare`` result, to fill the error columns.
    """
    modules = dict(gm.named_modules())
    lowered = "lowered" in gm.meta.get("fxq_properties", ())
    errors = {layer.origin: layer for layer in comparison.layers} if comparison is not None else {}
    value_of = _value_lookup(values, lowered)
    rows = []
    for node in gm.graph.nodes:
        if node.op not in _OPS and not all_nodes:
            continue
        record: NodeInfo = node.meta.get("fxq") or NodeInfo()
        boundary = node.op in _OPS and (record.lowered_to in ("quantize", "dequantize", "layout") or (
            node.op == "call_module" and isinstance(modules.get(node.target), _WATCHERS)))
        if boundary and not (include_boundaries or all_nodes):
            continue
        category = "boundary" if boundary else _category(node, record)
        rows.append(_row(node, record, modules, value_of, errors.get(record.origin), category))
    return rows


def _category(node: Node, record: NodeInfo) -> str:
    if node.op not in _OPS:
        return "io"
    if record.float_reason or record.lowered_to == "float":
        return "float"
    if record.lowered_to or record.observers:
        return "quantized"
    return "pending"


def _value_lookup(values: dict[str, Any] | None, lowered: bool):
    if values is not None:
        return lambda node: values.get(node.name) if isinstance(node, Node) else None
    if lowered:  # what prepare recorded was the float model's dtype, not what the lowered graph computes
        return lambda node: None
    return lambda node: node.meta.get(VALUE_KEY) if isinstance(node, Node) else None


def _row(node: Node, record: NodeInfo, modules: dict, value_of, error, category: str) -> NodeRow:
    output = dict(record.qparams.get("output", {}))
    observer = modules.get(record.observers.get("output", ""))
    if not output and isinstance(observer, Observer):
        output = _observer_qparams(observer)
    return NodeRow(
        name=node.name,
        kind=node.op.replace("call_", "").replace("get_attr", "constant"),
        target=target_text(node),
        concept=record.concept,
        fused_group=record.fused_group,
        qconfig=describe_qconfig(record.qconfig),
        rule=record.qconfig_rule,
        input_dtypes=tuple(_dtype(value_of(arg)) for arg in node.all_input_nodes if _dtype(value_of(arg))),
        output_dtype=_dtype(value_of(node)),
        observed_min=output.get("min"),
        observed_max=output.get("max"),
        scale=output.get("scale"),
        zero_point=output.get("zero_point"),
        qdtype=output.get("dtype"),
        weight=_describe_weight(record),
        status=status_of(record),
        sqnr_db=error.sqnr_db if error else None,
        own_sqnr_db=error.own_sqnr_db if error else None,
        origin=record.origin,
        module_path=record.module_path,
        made_by=tuple(dict.fromkeys(str(stamp) for stamp in record.history)),
        near_misses=tuple(dict.fromkeys(f"{rule}: {reason}" for rule, reason in record.declined)),
        inputs=tuple(arg.name for arg in node.all_input_nodes),
        category=category,
    )


def _observer_qparams(observer: Observer) -> dict:
    """What convert will fix for this observer (if calibration has shown it data), in the annotation's form."""
    from fxq.quantize_tensor import describe_qparams

    if not observer.has_data:
        return {}
    return describe_qparams(observer)


def status_of(record: NodeInfo) -> str:
    """The kernel or reference op a node became, "float: <why>", or where it stands before convert."""
    if record.float_reason:
        return f"float: {record.float_reason}"
    if record.lowered_to:
        return record.lowered_to
    if record.observers:
        float_output = "; float output" if record.precision == FLOAT_OUTPUT else ""
        return "observed (" + ", ".join(sorted(record.observers)) + ")" + float_output
    if record.qconfig is not None:
        return "qconfig assigned"
    return ""


def describe_qconfig(qconfig) -> str | None:
    """"act HistogramObserver quint8; weight PerChannelMinMaxObserver qint8" for a QConfig (None stays None)."""
    if qconfig is None:
        return None
    parts = []
    for role in ("activation", "weight"):
        factory = getattr(qconfig, role, None)
        if factory is None:
            continue
        cls = getattr(factory, "cls", None)
        name = cls.__name__ if cls is not None else getattr(factory, "__name__", type(factory).__name__)
        dtype = getattr(factory, "kwargs", {}).get("dtype")
        text = f"{'act' if role == 'activation' else 'weight'} {name}"
        parts.append(text + (f" {str(dtype).replace('torch.', '')}" if dtype is not None else ""))
    return "; ".join(parts)


def _describe_weight(record: NodeInfo) -> str | None:
    """The weight's quantization, then what passes changed in it: equalization and smoothing factors' range, the
    bias correction applied."""
    weight = record.qparams.get("weight")
    if not weight:
        return None
    text = f"{weight['dtype']} {weight['scheme'].replace('_', '-')}"
    if weight["scheme"] == "per_channel":
        text += f" ({len(weight['scale'])} ch, axis {weight['axis']})"
    if weight.get("why_per_tensor"):
        text += f": {weight['why_per_tensor']}"
    changes = [f"equalized ({stamp.rule})" for stamp in record.history if stamp.pass_name == "equalize"]
    smoothing = record.qparams.get("smoothing")
    if smoothing:
        changes.append(f"smoothed alpha {smoothing['alpha']}, s {smoothing['scale_min']:.3g}..{smoothing['scale_max']:.3g}"
                       f" ({smoothing['placement']})")
    correction = record.qparams.get("bias_correction")
    if correction:
        changes.append(f"bias corrected (max {correction['max_abs']:.3g}, mean {correction['mean_abs']:.3g})")
    return "; ".join([text, *changes])


def _dtype(value) -> str | None:
    if isinstance(value, TensorInfo):
        return str(value.dtype).replace("torch.", "")
    if isinstance(value, tuple):
        inner = [_dtype(item) for item in value if item is not None]
        return f"tuple[{', '.join(inner)}]" if inner else None
    return None


def target_text(node: Node) -> str:
    """A node's target as text: the module path, method name, or module-qualified function name."""
    target = node.target
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    if module.startswith("torch._ops."):
        return f"torch.ops.{module.rsplit('.', 1)[-1]}.{name}"
    return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module else name
