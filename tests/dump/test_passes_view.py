"""--after PASS and --after-all: each pass's graph, what it changed, and its time."""

import pytest
import torch
from torch import nn

import fxq
from fxq.dump.diff import diff_graphs
from fxq.dump.text import fit_table
from tests.dump.helpers import dump, dump_text


def test_after_fuse_shows_the_fused_graph_and_what_fusion_removed():
    result = dump("resnet", "--after", "fuse")
    assert result.after_pass == "fuse" and len(result.passes) == 1
    change = result.passes[0]
    assert "bn1" in change["removed"] and "relu" in change["removed"]
    rows = {row.name: row for row in result.rows}
    assert rows["conv1"].fused_group == "conv1+bn1+relu" and "bn1" not in rows


def test_after_all_lists_every_pass_with_its_changes_and_time():
    result = dump("mlp", "--after-all")
    names = [p["name"] for p in result.passes]
    assert names == ["normalize", "fuse", "name-nodes", "assign-qconfig", "assign-precision", "insert-observers",
                     "observe-clamped", "record-calibration-sample", "sensitivity-ranges", "lower", "cleanup", "name-nodes"]
    by_name = {p["name"]: p for p in result.passes}
    assert by_name["insert-observers"]["added"] == ["obs_x", "obs_fc1", "obs_fc2"]  # fc3 returns float
    assert {"node": "fc2", "before": ["relu1"], "after": ["fc1"]} in by_name["fuse"]["rewired"]
    assert all(p["seconds"] >= 0 for p in result.passes)
    text = dump_text("mlp", "--after-all")
    assert "== after lower" in text and "+ obs_fc1" in text and "per-layer error" in text


def test_unknown_pass_names_the_passes_there_are():
    with pytest.raises(fxq.ConfigError, match="normalize, fuse, name-nodes, assign-qconfig"):
        dump("mlp", "--after", "fusion")


def test_diff_reports_added_removed_and_rewired_nodes():
    before = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    after = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    relu = next(n for n in after.graph.nodes if n.target == "1")
    with after.graph.inserting_before(relu):
        extra = after.graph.call_function(torch.neg, (relu.args[0],))
    relu.replace_input_with(relu.args[0], extra)
    change = diff_graphs(before, after)
    assert change.added == [extra.name] and change.removed == []
    assert change.rewired == [("_1", ("_0",), (extra.name,))]
    assert change.lines()[0] == f"+ {extra.name}"


def test_text_tables_fit_their_width_and_drop_empty_columns():
    cells = [["a" * 40, "", "b" * 90], ["c", "", "d"]]
    table = fit_table(["name", "empty", "status"], cells, 60)
    assert max(len(line) for line in table.splitlines()) <= 60
    assert "empty" not in table and "…" in table
