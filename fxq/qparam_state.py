"""A converted model's activation qparams in its ``state_dict``.

The scale and zero point of each quantized activation are arguments of a call in the graph: the quantize of a
graph input, an int8 kernel's output qparams (``quantized.add(a, b, scale, zero_point)``). The kernels take them
as Python numbers, so the graph keeps them as literals and a call reads no tensor for them. ``state_dict`` of a
converted model mirrors every such pair as ``fxq_qparams.<node>.scale`` (float64, the literal's exact value)
and ``fxq_qparams.<node>.zero_point`` (int64); ``load_state_dict`` writes them back into the graph, and the
node's record, so a model prepared and converted the same way computes exactly what the saved one did. The
int8 modules keep theirs the same way (``PackedWeightModule``).

Which arguments are qparams is read from the callee's signature, not from a table of kernels: a pair of
adjacent arguments named ``...scale`` and ``...zero_point`` (ELU's own ``scale`` argument is not followed by
a zero point, so it is not taken for one).
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch.fx import GraphModule, Node

from fxq.annotation import META_KEY

PREFIX = "fxq_qparams"
_ROLES = ("scale", "zero_point")


def sites(gm: GraphModule) -> dict[str, tuple[Node, tuple[int | str, int | str]]]:
    """Node name -> (node, where its scale and zero point are: an argument position or a keyword), for every call
    in ``gm`` that takes literal qparams."""
    found = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        pair = _qparam_arguments(node.target)
        if pair is None:
            continue
        places = tuple(_place(node, position, name) for position, name in pair)
        if all(place is not None for place in places):
            values = [_read(node, place) for place in places]
            if isinstance(values[0], float) and isinstance(values[1], int) and not isinstance(values[1], bool):
                found[node.name] = (node, places)
    return found


def save(gm: GraphModule, destination: dict, prefix: str) -> None:
    """Add ``gm``'s literal qparams to ``destination`` (what ``state_dict`` returns)."""
    for name, (node, (scale, zero_point)) in sites(gm).items():
        destination[f"{prefix}{PREFIX}.{name}.scale"] = torch.tensor(_read(node, scale), dtype=torch.float64)
        destination[f"{prefix}{PREFIX}.{name}.zero_point"] = torch.tensor(_read(node, zero_point), dtype=torch.int64)


def load(gm: GraphModule, state_dict: dict, prefix: str, missing_keys: list, unexpected_keys: list,
         error_msgs: list) -> bool:
    """Write the qparams in ``state_dict`` into ``gm``'s graph; True if any literal changed (then the caller
    recompiles). A qparam this graph needs but ``state_dict`` lacks goes to ``missing_keys``; one for a node this
    graph does not have stays in ``unexpected_keys``."""
    ours = {f"{prefix}{PREFIX}.{name}.{role}": (node, place, role)
            for name, (node, places) in sites(gm).items() for role, place in zip(_ROLES, places, strict=True)}
    unexpected_keys[:] = [key for key in unexpected_keys if key not in ours]
    changed = False
    for key, (node, place, role) in ours.items():
        if key not in state_dict:
            missing_keys.append(key)
            continue
        value = state_dict[key]
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            error_msgs.append(f"{key} must be a one-element tensor (a {role}), got {_describe(value)}")
            continue
        new = float(value) if role == "scale" else int(value)
        if new != _read(node, place):
            _write(node, place, new)
            _update_record(node, role, new)
            changed = True
    return changed


@functools.cache
def _qparam_arguments(target) -> tuple[tuple[int, str], tuple[int, str]] | None:
    """((position, name) of the scale, (position, name) of the zero point) in ``target``'s signature, or None."""
    names = _argument_names(target)
    for i in range(len(names) - 1):
        if names[i].endswith("scale") and names[i + 1].endswith("zero_point"):
            return (i, names[i]), (i + 1, names[i + 1])
    return None


def _argument_names(target) -> list[str]:
    if isinstance(target, torch._ops.OpOverloadPacket):
        overload = getattr(target, "default", None)
        return [a.name for a in overload._schema.arguments] if overload is not None else []
    if isinstance(target, torch._ops.OpOverload):
        return [a.name for a in target._schema.arguments]
    aten = getattr(torch.ops.aten, getattr(target, "__name__", ""), None) if _is_torch_builtin(target) else None
    if aten is not None:
        return _argument_names(aten)
    try:
        return list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return []


def _is_torch_builtin(target) -> bool:
    return inspect.isbuiltin(target) and getattr(torch, getattr(target, "__name__", ""), None) is target


def _place(node: Node, position: int, name: str) -> int | str | None:
    if len(node.args) > position:
        return position
    return name if name in node.kwargs else None


def _read(node: Node, place: int | str):
    return node.args[place] if isinstance(place, int) else node.kwargs[place]


def _write(node: Node, place: int | str, value) -> None:
    if isinstance(place, int):
        node.update_arg(place, value)
    else:
        node.update_kwarg(place, value)


def _update_record(node: Node, role: str, value) -> None:
    """The node's record follows the loaded qparam; the observed range it was derived from no longer applies."""
    record = node.meta.get(META_KEY)
    output = record.qparams.get("output") if record is not None else None
    if output is not None:
        output[role] = value
        output.pop("min", None)
        output.pop("max", None)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
