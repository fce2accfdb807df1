"""A torch.fx Graph as plain data (``fxq.plain_data``): its nodes in order, each with its op, name, target,
arguments and fxq's records, and the calling convention of a graph captured with ``torch.export``.

Reading it back builds the same graph node by node, so node names and records come back exactly (re-tracing
generated code, as unpickling a GraphModule does, renames nodes and drops their records). A node may call only
what ``plain_data.callable_named`` allows and call only public tensor methods: a graph from a file cannot
reach ``eval`` or ``os`` through an attribute chain.
"""

from __future__ import annotations

import builtins

import torch
from torch.fx import Graph, Node
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from fxq.annotation import META_KEY
from fxq.errors import LoadError
from fxq.plain_data import TAG, EncodeError, callable_named, decode, encode
from fxq.shapes import VALUE_KEY

NODE_KEYS = (META_KEY, VALUE_KEY, "is_wrapped")  # fxq's records, and the flag the code shows wrapped calls by; not
# torch's other records (stack traces, fake values)
_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
# dunder methods an FX graph calls on tensors by name (operators written as methods)
_DUNDER_METHODS = frozenset({"__getitem__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                             "__truediv__", "__rtruediv__", "__matmul__", "__neg__", "__and__", "__or__",
                             "__invert__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"})


def graph_to_data(graph: Graph, skip: frozenset[Node] = frozenset()) -> dict:
    """``graph`` as plain data, without the nodes in ``skip`` (nodes nothing reads).

    Raises:
        EncodeError: a target, argument or record that cannot be written as data; the message names the node.
    """
    def node_name(value):
        return value.name if isinstance(value, Node) else None

    nodes = []
    for node in graph.nodes:
        if node in skip:
            continue
        try:
            nodes.append({
                "op": node.op, "name": node.name,
                "target": node.target if isinstance(node.target, str) else encode(node.target),
                "args": encode(tuple(node.args), node_name), "kwargs": encode(dict(node.kwargs), node_name),
                "meta": {key: encode(node.meta[key]) for key in NODE_KEYS if key in node.meta},
            })
        except EncodeError as err:
            raise EncodeError(f"at node {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)}), "
                              f"{err}") from err
    return {"nodes": nodes, "codegen": _codegen_to_data(graph)}


def data_to_graph(data: dict) -> Graph:
    """The graph ``graph_to_data`` described.

    Raises:
        LoadError: an unknown op, a call that is not allowed, a node read before it is made, or a name clash.
    """
    graph = Graph()
    made: dict[str, Node] = {}

    def node(name: str) -> Node:
        if name not in made:
            raise LoadError(f"the file's graph reads node {name!r} before making it; the file is damaged")
        return made[name]

    for item in data["nodes"]:
        op, name = item["op"], item["name"]
        if op not in _OPS:
            raise LoadError(f"node {name!r} has op {op!r}, which is not an FX op; the file is damaged")
        target = _target(op, name, item["target"])
        args, kwargs = decode(item["args"], node), decode(item["kwargs"], node)
        _check_attribute_reads(name, target, args)
        created = graph.create_node(op, target, tuple(args), kwargs, name=name)
        if created.name != name:
            raise LoadError(f"the file's graph names two nodes {name!r}; the file is damaged")
        created.meta.update({key: decode(value) for key, value in item["meta"].items()})
        made[name] = created
    _set_codegen(graph, data.get("codegen"))
    graph.lint()
    return graph


def _target(op: str, name: str, target):
    if op == "call_function":
        if not (isinstance(target, dict) and target.get(TAG) == "ref"):
            raise LoadError(f"node {name!r} calls {target!r}, which is not a function name; the file is damaged")
        return callable_named(target["name"])
    if not isinstance(target, str):
        raise LoadError(f"node {name!r} ({op}) has target {target!r}, not a name; the file is damaged")
    if op == "call_method" and not (target in _DUNDER_METHODS or
                                    not target.startswith("_") and hasattr(torch.Tensor, target)):
        raise LoadError(f"node {name!r} calls method {target!r}, which is not a public tensor method fxq.load "
                        "allows; the file is damaged or was tampered with")
    return target


def _check_attribute_reads(name: str, target, args) -> None:
    """``getattr(x, "shape")`` is how graphs read sizes; a private or dunder attribute is how code escapes."""
    if target is builtins.getattr and not (len(args) >= 2 and isinstance(args[1], str) and
                                           not args[1].startswith("_")):
        raise LoadError(f"node {name!r} reads attribute {args[1:2]!r}; fxq.load allows only public attributes")


def _codegen_to_data(graph: Graph) -> dict | None:
    codegen = graph._codegen
    if not isinstance(codegen, _PyTreeCodeGen):
        return None
    info = codegen.pytree_info
    return {"orig_args": list(info.orig_args), "in_spec": encode(info.in_spec), "out_spec": encode(info.out_spec)}


def _set_codegen(graph: Graph, data: dict | None) -> None:
    if data is not None:
        graph.set_codegen(_PyTreeCodeGen(_PyTreeInfo(data["orig_args"], decode(data["in_spec"]),
                                                     decode(data["out_spec"]))))
