import operator

import pytest
import torch
from fxq.passes.name_nodes import planned_names
from torch import nn
from torch.fx import Graph, GraphModule

import fxq
from fxq.annotation import info
from fxq.dump.text import fit_table
from fxq.graph_pass import PassContext
from tests.passes.helpers import run


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        w = torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))
        return torch.relu(y * w + x)


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(SqueezeExcite(), SqueezeExcite())

    def forward(self, x):
        return self.blocks(x)


def _names_by_block(gm, stem):
    """Block index -> names of the nodes called ``stem``/``stem_N`` that come from that block's module."""
    found = {}
    for node in gm.graph.nodes:
        if node.name == stem or node.name.startswith(stem + "_") and node.name[len(stem) + 1:].isdigit():
            found.setdefault(info(node).module_path, []).append(node.name)
    return found


@pytest.mark.parametrize("backend", ["x86", "reference"])
def test_converted_names_run_in_forward_order_and_keep_the_traced_names(backend):
    model, x = TwoBlocks().eval(), torch.randn(2, 8, 6, 6)
    traced = torch.fx.symbolic_trace(model)
    quantized = fxq.quantize(model, (x,), [(x,)], backend=backend, runtime="graph")
    names = [node.name for node in quantized.graph.nodes]
    assert len(names) == len(set(names))
    fused = _names_by_block(quantized, "add_relu")
    if backend == "x86":  # each block's add + relu became one kernel: numbered in block order, not reversed
        assert fused == {"blocks.0": ["add_relu"], "blocks.1": ["add_relu_1"]}
    sigmoids = _names_by_block(quantized, "sigmoid")
    assert sigmoids == {"blocks.0": ["sigmoid"], "blocks.1": ["sigmoid_1"]}  # as the trace named them
    assert {"sigmoid", "sigmoid_1", "mul", "mul_1"} <= {node.name for node in traced.graph.nodes}
    quantizes = [n for n in names if n.startswith("quantize_per_tensor")]
    assert quantizes == ["quantize_per_tensor"] + [f"quantize_per_tensor_{i}" for i in range(1, len(quantizes))]


def test_prepared_names_follow_the_forward_and_observers_are_named_after_them():
    model, x = TwoBlocks().eval(), torch.randn(2, 8, 6, 6)
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(), (x,), backend="x86")
    assert _names_by_block(prepared, "add_relu") == {"blocks.0": ["add_relu"], "blocks.1": ["add_relu_1"]}
    observer = {node.args[0].name: node.target for node in prepared.graph.nodes
                if node.op == "call_module" and node.target.startswith("obs_")}
    assert observer["add_relu"] == "obs_add_relu" and observer["add_relu_1"] == "obs_add_relu_1"


def _reversed_graph():
    """x -> relu_9 -> relu_3 -> add(., x): nodes a pass created, named against the order they run in."""
    graph = Graph()
    x = graph.placeholder("x")
    first = graph.call_function(torch.relu, (x,), name="relu_9")
    second = graph.call_function(torch.relu, (first,), name="relu_3")
    total = graph.call_function(operator.add, (second, x), name="add_relu_7")
    graph.output(total)
    return GraphModule(nn.Module(), graph)


def test_created_nodes_are_numbered_in_graph_order_and_origins_win():
    gm = _reversed_graph()
    nodes = list(gm.graph.nodes)
    assert [planned_names(nodes)[n] for n in nodes] == ["x", "relu", "relu_1", "add_relu", "output"]
    info(nodes[2]).origin = "relu"  # the second computes the traced "relu": it keeps that name
    assert [planned_names(nodes)[n] for n in nodes] == ["x", "relu_1", "relu", "add_relu", "output"]
    info(nodes[3]).origin = "add"  # another kind of op than its origin (a fused kernel): numbered by its own kind
    assert planned_names(nodes)[nodes[3]] == "add_relu"


def test_renaming_keeps_numerics_and_a_fresh_namespace_never_repeats_a_name():
    gm = _reversed_graph()
    x = torch.randn(3, 4)
    expected = gm(x)
    renamed = run(gm, "name-nodes", ctx=PassContext())
    assert torch.equal(renamed(x), expected)
    assert [n.name for n in renamed.graph.nodes] == ["x", "relu", "relu_1", "add_relu", "output"]
    with renamed.graph.inserting_after(next(iter(renamed.graph.nodes))):
        extra = renamed.graph.call_function(torch.relu, (next(iter(renamed.graph.nodes)),))
    assert extra.name not in {"relu", "relu_1"}


def test_an_exported_graph_keeps_its_calling_convention():
    model, x = TwoBlocks().eval(), torch.randn(2, 8, 6, 6)
    quantized = fxq.quantize(model, (x,), [(x,)], backend="x86", capture="export", runtime="graph")
    assert _names_by_block(quantized, "add_relu") == {"blocks.0": ["add_relu"], "blocks.1": ["add_relu_1"]}
    assert fxq.metrics.sqnr_db(model(x), quantized(x)) > 20


def test_text_tables_shorten_a_name_in_the_middle_so_rows_stay_apart():
    cells = [["quantize_per_tensor_2", "x" * 80], ["quantize_per_tensor_8", "y" * 80]]
    table = fit_table(["node", "status"], cells, 40, [10, 22])
    first, second = (line.split()[0] for line in table.splitlines()[2:])
    assert first != second and first.endswith("_2") and second.endswith("_8") and "…" in first
