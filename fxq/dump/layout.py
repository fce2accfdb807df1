"""Positions for drawing a graph top to bottom without Graphviz: each node sits one layer below its deepest
input, and nodes of a layer are ordered by where their inputs are (one barycentre pass), which keeps chains
straight and crossings few. Linear in the number of nodes and edges, so thousands of nodes lay out instantly."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placed:
    """A node's layer and column (both from 0)."""

    layer: int
    column: int


def layered(order: list[str], inputs: dict[str, tuple[str, ...]]) -> dict[str, Placed]:
    """Layer and column for each node; ``order`` must be topological (a graph's node order is)."""
    layer: dict[str, int] = {}
    for name in order:
        layer[name] = 1 + max((layer[source] for source in inputs.get(name, ()) if source in layer), default=-1)
    by_layer: dict[int, list[str]] = {}
    for name in order:
        by_layer.setdefault(layer[name], []).append(name)
    column: dict[str, int] = {}
    for depth in sorted(by_layer):
        names = by_layer[depth]
        key = {}
        for index, name in enumerate(names):  # the mean column of its inputs; order of appearance breaks ties
            sources = [column[s] for s in inputs.get(name, ()) if s in column]
            key[name] = (sum(sources) / len(sources) if sources else float(index), index)
        names.sort(key=key.__getitem__)
        for index, name in enumerate(names):
            column[name] = index
    return {name: Placed(layer[name], column[name]) for name in order}
