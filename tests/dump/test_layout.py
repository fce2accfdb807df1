"""The layered layout: long edges get lanes of their own, layers are ordered without needless crossings, chains
stay straight, and thousands of nodes lay out fast."""

import itertools
import time

import pytest

from fxq.dump.layout import layered

# x -> conv -> conv -> add(., x): the skip edge spans three layers
RESIDUAL = {"x": (), "conv1": ("x",), "conv2": ("conv1",), "conv3": ("conv2",), "add": ("conv3", "x"),
            "out": ("add",)}
# squeeze-excite: the feature map waits beside the pool-fc-relu-fc-sigmoid branch, then is scaled by it
SQUEEZE_EXCITE = {"x": (), "conv": ("x",), "pool": ("conv",), "fc1": ("pool",), "relu": ("fc1",),
                  "fc2": ("relu",), "gate": ("fc2",), "scale": ("conv", "gate"), "out": ("scale",)}
# an inception-style fan-out and concat, the branches of different lengths
INCEPTION = {"x": (), "a": ("x",), "b1": ("x",), "b2": ("b1",), "c1": ("x",), "c2": ("c1",), "c3": ("c2",),
             "cat": ("a", "b2", "c3", "x"), "out": ("cat",)}
GRAPHS = {"residual": RESIDUAL, "squeeze-excite": SQUEEZE_EXCITE, "inception": INCEPTION}


def lay_out(graph: dict):
    return layered(list(graph), graph)


def polylines(graph: dict, layout) -> list[list[tuple[int, int]]]:
    """Each edge as its (layer, column) points: source, lane, target."""
    lines = []
    for (source, target), lane in layout.lanes.items():
        start, end = layout.nodes[source], layout.nodes[target]
        lane_points = [(start.layer + 1 + k, column) for k, column in enumerate(lane)]
        lines.append([(start.layer, start.column), *lane_points, (end.layer, end.column)])
    return lines


def crossings(lines) -> int:
    """How many pairs of edge segments between the same two layers cross (share no end and swap order)."""
    segments = [(a, b) for line in lines for a, b in itertools.pairwise(line)]
    count = 0
    for (a, b), (c, d) in itertools.combinations(segments, 2):
        if a[0] == c[0] and a != c and b != d and (a[1] - c[1]) * (b[1] - d[1]) < 0:
            count += 1
    return count


def test_a_chain_is_one_straight_column():
    chain = {"n0": ()} | {f"n{i}": (f"n{i - 1}",) for i in range(1, 30)}
    layout = lay_out(chain)
    assert [(p.layer, p.column) for p in layout.nodes.values()] == [(i, 0) for i in range(30)]
    assert layout.columns == 1 and layout.layers == 30 and all(lane == () for lane in layout.lanes.values())


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_edge_steps_one_layer_at_a_time_through_cells_no_node_takes(name):
    check_cells(GRAPHS[name], lay_out(GRAPHS[name]))


def check_cells(graph: dict, layout) -> None:
    """Every node is below its inputs, and each (layer, column) holds one node or one source's lane."""
    owner = {}  # (layer, column) -> the node there, or the source whose lane passes there
    for node, p in layout.nodes.items():
        assert owner.setdefault((p.layer, p.column), node) == node
    for (source, target), lane in layout.lanes.items():
        start, end = layout.nodes[source], layout.nodes[target]
        assert len(lane) == end.layer - start.layer - 1 >= 0
        for k, column in enumerate(lane):
            assert owner.setdefault((start.layer + 1 + k, column), ("lane", source)) == ("lane", source)
    assert set(layout.lanes) == {(source, target) for target, sources in graph.items() for source in sources}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_branches_are_drawn_without_crossings(name):
    layout = lay_out(GRAPHS[name])
    assert crossings(polylines(GRAPHS[name], layout)) == 0


def test_sweeps_undo_an_order_that_crosses():
    # two chains whose nodes come interleaved and swapped: listed order would cross at every layer
    graph = {"a0": (), "b0": ()}
    for i in range(1, 6):
        first, second = ("b", "a") if i % 2 else ("a", "b")
        graph[f"{first}{i}"] = (f"{first}{i - 1}",)
        graph[f"{second}{i}"] = (f"{second}{i - 1}",)
    layout = lay_out(graph)
    assert crossings(polylines(graph, layout)) == 0
    assert len({layout.nodes[f"a{i}"].column for i in range(6)}) == 1  # each chain stays straight


def test_a_node_without_inputs_sits_just_above_its_first_reader():
    graph = {"x": (), "a": ("x",), "b": ("a",), "c": ("b",), "bias": (), "add": ("c", "bias")}
    layout = lay_out(graph)
    assert layout.nodes["bias"].layer == layout.nodes["add"].layer - 1
    assert layout.lanes[("bias", "add")] == ()


def test_one_lane_carries_all_long_edges_of_a_source():
    # an input every block reads (an attention mask): one lane beside the chain, not one per reader
    graph = {"x": (), "mask": (), "b0": ("x", "mask")}
    for i in range(1, 20):
        graph[f"b{i}"] = (f"b{i - 1}", "mask")
    layout = lay_out(graph)
    assert layout.columns == 2
    assert {lane[-1] for (source, _), lane in layout.lanes.items() if source == "mask" and lane} == {1}


def test_two_thousand_nodes_lay_out_fast():
    graph, previous = {"x": ()}, "x"
    while len(graph) < 2000:  # residual blocks, some with a branch of their own
        i = len(graph)
        graph[f"a{i}"] = (previous,)
        graph[f"b{i}"] = (f"a{i}",)
        graph[f"s{i}"] = (previous,) if i % 3 == 0 else (f"a{i}",)
        graph[f"add{i}"] = (f"b{i}", f"s{i}", previous)
        previous = f"add{i}"
    start = time.perf_counter()
    layout = lay_out(graph)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"{seconds:.2f} s for {len(graph)} nodes"
    check_cells(graph, layout)
    assert layout.columns <= 4 and layout.layers < len(graph)  # blocks side by side would be 2,000 wide
