"""Every observer of a prepared model: which node it watches, what calibration showed it, and the qparams
convert would fix from that."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule

from fxq.errors import ConfigError
from fxq.observers import Observer
from fxq.quantize_tensor import describe_qparams


@dataclass(frozen=True)
class ObserverRow:
    """One observer. Per-channel values are lists; an observer that saw no data has None for them."""

    observer: str
    node: str
    kind: str
    dtype: str
    scheme: str
    observed_min: Any
    observed_max: Any
    scale: Any
    zero_point: Any


def observer_summary(prepared: GraphModule) -> list[ObserverRow]:
    """The observers of ``prepared`` (what ``fxq.prepare`` returned) in graph order, with what they saw.

    Raises:
        ConfigError: ``prepared`` has no observers (it is not a prepared model, or it was converted).
    """
    modules = dict(prepared.named_modules())
    rows, seen = [], set()
    for node in prepared.graph.nodes:
        observer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(observer, Observer) or node.target in seen:
            continue
        seen.add(node.target)
        described = describe_qparams(observer) if observer.has_data else {}
        rows.append(ObserverRow(
            observer=node.target, node=observer.node_name, kind=type(observer).__name__,
            dtype=str(observer.dtype).replace("torch.", ""),
            scheme=("symmetric" if observer.symmetric else "affine") + (" per-channel" if observer.per_channel
                                                                         else ""),
            observed_min=described.get("min"), observed_max=described.get("max"),
            scale=described.get("scale"), zero_point=described.get("zero_point")))
    if not rows:
        raise ConfigError("observer_summary() takes a prepared model (what fxq.prepare returns, before convert); "
                          f"this {type(prepared).__name__} has no observers")
    return rows
