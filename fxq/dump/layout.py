"""Positions for drawing a graph top to bottom without Graphviz, the layered (Sugiyama) way, kept near-linear so
thousands of nodes lay out in a fraction of a second.

1. Layers: each node one layer below its deepest input; a node without inputs (a constant, an input) sits just
   above its first reader, so it does not hang a long edge from the top.
2. Lanes: an edge spanning several layers gets a virtual point in each layer it crosses, which takes a column
   like a node does. Drawn through those points, a residual or squeeze-excite branch runs in its own lane
   instead of behind the boxes it skips. The long edges of one source share its lane (a bus), so an input read
   by every block costs one lane, not one per reader.
3. Order: a few barycentre sweeps, down then up, order each layer by the mean position of its neighbours in
   the layer before, which removes most crossings.
4. Columns: each item goes under its leftmost input when that column is free in its layer, else in the next
   free one to the right. Chains stay straight, and a merge returns to the left, so the drawing does not drift
   wider block after block.
"""

from __future__ import annotations

from dataclasses import dataclass

SWEEPS = 4


@dataclass(frozen=True)
class Placed:
    """A node's layer and column (both from 0)."""

    layer: int
    column: int


@dataclass(frozen=True)
class Layout:
    """Where each node goes, and each edge's lane: its column in every layer strictly between its ends."""

    nodes: dict[str, Placed]
    lanes: dict[tuple[str, str], tuple[int, ...]]
    layers: int
    columns: int


def layered(order: list[str], inputs: dict[str, tuple[str, ...]]) -> Layout:
    """The layout of the nodes ``order`` names; it must be topological (a graph's node order is). Inputs that
    are not earlier in ``order`` are ignored."""
    index = {name: i for i, name in enumerate(order)}
    sources = [[index[s] for s in dict.fromkeys(inputs.get(name, ())) if index.get(s, i) < i]
               for i, name in enumerate(order)]
    users: list[list[int]] = [[] for _ in order]
    for target, reads in enumerate(sources):
        for source in reads:
            users[source].append(target)
    layer = [0] * len(order)
    for i, reads in enumerate(sources):
        layer[i] = 1 + max((layer[s] for s in reads), default=-1)
    for i, reads in enumerate(sources):
        if not reads and users[i]:
            layer[i] = min(layer[u] for u in users[i]) - 1

    # items: the nodes, then the lanes' virtual points; up/down: their neighbours in the layer above/below
    up: list[list[int]] = [list(reads) for reads in sources]
    down: list[list[int]] = [[] for _ in order]
    item_layer, first = list(layer), list(range(len(order)))  # first: the node an item descends from
    lane_of: dict[int, list[int]] = {}  # source -> its lane's points, one per layer below it
    for source, readers in enumerate(users):
        bottom = max((layer[t] for t in readers), default=0)
        above = source
        for depth in range(layer[source] + 1, bottom):
            point = len(item_layer)
            item_layer.append(depth)
            first.append(source)
            up.append([above])
            down.append([])
            down[above].append(point)
            lane_of.setdefault(source, []).append(point)
            above = point
    for target, reads in enumerate(sources):
        for k, source in enumerate(reads):
            span = layer[target] - layer[source]
            above = lane_of[source][span - 2] if span > 1 else source
            up[target][k] = above
            down[above].append(target)

    rows: list[list[int]] = [[] for _ in range(max(item_layer, default=-1) + 1)]
    # start from the graph's order, lanes right of the nodes: ties keep it, so a block's ops stay in one column
    for item in sorted(range(len(item_layer)), key=lambda item: (item >= len(order), first[item], item)):
        rows[item_layer[item]].append(item)
    rank = [0] * len(item_layer)
    for row in rows:
        _number(row, rank)
    for _ in range(SWEEPS):
        _sweep(rows[1:], up, rank)
        _sweep(rows[-2::-1], down, rank)
    _sweep(rows[1:], up, rank)

    column = [0] * len(item_layer)
    for row in rows:
        free = 0
        for item in row:
            column[item] = max(free, min((column[n] for n in up[item]), default=free))
            free = column[item] + 1
    lanes = {}
    for target, name in enumerate(order):
        for source in dict.fromkeys(inputs.get(name, ())):
            s = index.get(source, target)
            if s < target:
                points = lane_of.get(s, [])[: layer[target] - layer[s] - 1]
                lanes[(source, name)] = tuple(column[p] for p in points)
    return Layout({name: Placed(layer[i], column[i]) for i, name in enumerate(order)}, lanes, len(rows),
                  max(column, default=-1) + 1)


def _sweep(rows: list[list[int]], neighbours: list[list[int]], rank: list[int]) -> None:
    """Order each row by its items' mean neighbour rank (an item without neighbours keeps its own rank)."""
    for row in rows:
        key = {}
        for item in row:
            near = neighbours[item]
            key[item] = sum(rank[n] for n in near) / len(near) if near else rank[item]
        row.sort(key=key.__getitem__)
        _number(row, rank)


def _number(row: list[int], rank: list[int]) -> None:
    for position, item in enumerate(row):
        rank[item] = position
