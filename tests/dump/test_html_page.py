"""The HTML page of ``fxq dump``: edges in lanes of their own, blocks that collapse, a search box, the
comparison's columns, an error chart without "inf dB", and all of it working in a real browser."""

import itertools
import json
import math
import re
import time

import pytest

from fxq.dump.html import BOX_H, BOX_W, drawing, group_of, to_html
from fxq.dump.rows import NodeRow
from tests.dump.helpers import dump
from tests.dump.test_layout import RESIDUAL, SQUEEZE_EXCITE
from tests.html_checks import browser, render


@pytest.fixture(scope="module")
def resnet():
    """ResNetish converted, with the comparison: branchy, grouped (layer1, layer2) and measured."""
    result = dump("resnet", "--compare", "--calibration", "2")
    return result, to_html(result.document())


def rows_of(graph: dict) -> list[NodeRow]:
    return [NodeRow(name, "function", name, inputs=inputs) for name, inputs in graph.items()]


def edges_behind_boxes(rows) -> list[str]:
    """Each (edge, box) where a segment of the edge's polyline passes inside a box not at either end of it."""
    picture = drawing(rows)
    found = []
    for source, target, points in picture.edges:
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            steps = max(abs(x1 - x0), abs(y1 - y0))
            samples = [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(steps + 1)]
            for name, (left, top) in picture.boxes.items():
                if name not in (source, target) and any(
                        left < x < left + BOX_W and top < y < top + BOX_H for x, y in samples):
                    found.append(f"{source}->{target} behind {name}")
    return found


@pytest.mark.parametrize("graph", [RESIDUAL, SQUEEZE_EXCITE], ids=["residual", "squeeze-excite"])
def test_no_edge_runs_behind_a_box_it_skips(graph):
    assert not edges_behind_boxes(rows_of(graph))
    assert len(drawing(rows_of(graph)).edges) == sum(len(inputs) for inputs in graph.values())


def test_no_edge_runs_behind_a_box_in_a_real_model(resnet):
    result, _ = resnet
    assert not edges_behind_boxes(result.rows)


def test_nodes_group_by_block():
    assert [group_of(path) for path in ("layer1.0.conv1", "layer1.0", "features.3.block.0",
                                        "encoder.layers.11.attn.q", "layer1.conv1", "fc", "")] == [
        "layer1.0", "layer1.0", "features.3", "encoder.layers.11", "layer1", "fc", ""]


def test_page_has_a_tab_and_a_collapsed_box_for_each_block(resnet):
    result, page = resnet
    data = layout_data(page)
    by_group = {}
    for row, (_, _, group) in zip(result.rows, data["nodes"], strict=True):
        by_group.setdefault(group, set()).add(group_of(row.module_path))
    assert len(data["groups"]) == len(re.findall(r'<g id="tab-\d+" class="tab"', page)) == 2
    assert {frozenset(names) for group, names in by_group.items() if group >= 0} == {
        frozenset({"layer1"}), frozenset({"layer2"})}
    assert 'id="find"' in page and 'id="fold"' in page and 'id="zin"' in page and not data["fold"]


def test_a_large_graph_opens_collapsed_and_pages_fast():
    rows, previous = [NodeRow("x", "placeholder", "x", category="io")], "x"
    for block in range(500):  # 2,000 nodes in residual blocks
        path = f"blocks.{block}"
        names = [f"b{block}_conv1", f"b{block}_conv2", f"b{block}_conv3", f"b{block}_add"]
        inputs = [(previous,), (names[0],), (names[1],), (names[2], previous)]
        rows += [NodeRow(n, "module", f"{path}.{n}", module_path=path, inputs=i, category="quantized")
                 for n, i in zip(names, inputs, strict=True)]
        previous = names[-1]
    start = time.perf_counter()
    page = to_html({"model": "Chain", "stage": "converted", "backend": "x86", "nodes": rows})
    seconds = time.perf_counter() - start
    data = layout_data(page)
    assert data["fold"] and len(data["groups"]) == 500
    assert seconds < 5 and len(page) < 3_000_000, (seconds, len(page))


def test_comparison_columns_are_in_the_table_and_tooltips(resnet):
    result, page = resnet
    for column in ("SQNR dB", "own dB", "worst channel dB", "cosine"):
        assert f"<th>{column}</th>" in page
    layer = next(layer for layer in result.comparison.layers if math.isfinite(layer.worst_channel_sqnr_db))
    row = re.search(rf'<tr id="row-{layer.node}">(.*?)</tr>', page).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[-4:-2] == [f"{layer.sqnr_db:.1f}", f"{layer.own_sqnr_db:.1f}"]
    assert cells[-2:] == [f"{layer.worst_channel_sqnr_db + 0.0:.1f}", f"{layer.cosine:.5f}"]
    assert f"(worst channel {layer.worst_channel_sqnr_db + 0.0:.1f} dB), cosine {layer.cosine:.5f}" in page


def test_without_a_comparison_the_table_has_no_error_columns():
    page = to_html(dump("mlp", "--stage", "calibrated").document())
    assert "<th>cosine</th>" not in page and "worst channel" not in page


def test_error_bars_show_measured_errors_and_name_the_layers_that_add_none(resnet):
    result, page = resnet
    layers = result.comparison.layers
    adding = [layer.node for layer in layers if layer.own_sqnr_db != math.inf]
    none_added = [layer.node for layer in layers if layer.own_sqnr_db == math.inf]
    assert adding and none_added  # this model has both: pools and adds add no measurable error
    chart = re.search(r'<svg class="bars".*?</svg>', page).group(0)
    assert "inf" not in chart
    assert re.findall(r'<text x="0" y="\d+">(.*?)</text>', chart) == adding
    note = re.search(r'<p class="note" id="no-added-error">(.*?)</p>', page).group(1)
    assert [name for name in none_added if name not in note] == []
    assert "inf dB" not in page


def layout_data(page: str) -> dict:
    return json.loads(re.search(r"var D=(\{.*?\}), W=", page).group(1))


# Runs in the page after its own script: uses each control and writes what the graph showed into <pre id=result>.
EXERCISE = """
(function(){
  function visible(selector){return Array.prototype.filter.call(document.querySelectorAll(selector),
    function(el){return el.style.display!=='none';}).length;}
  function state(){var svg=document.getElementById('graph');
    return {nodes:visible('[id^="node-"]'), groups:visible('.group'), tabs:visible('.tab'),
      height:+svg.getAttribute('data-h'), width:+svg.getAttribute('width'),
      hits:document.querySelectorAll('.hit').length, found:document.getElementById('found').textContent,
      edges:document.getElementById('edges').getAttribute('d').split('M').length-1};}
  var seen={start:state()};
  document.getElementById('fold').click(); seen.folded=state();
  document.querySelector('#group-0 rect').dispatchEvent(new MouseEvent('click',{bubbles:true}));
  seen.one_open=state();
  document.querySelector('#tab-0 rect').dispatchEvent(new MouseEvent('click',{bubbles:true}));
  seen.closed_again=state();
  var find=document.getElementById('find'); find.value='layer2.conv'; find.dispatchEvent(new Event('input'));
  seen.search=state();
  find.dispatchEvent(new KeyboardEvent('keydown',{key:'Enter'})); seen.next=state();
  document.getElementById('unfold').click(); seen.unfolded=state();
  document.getElementById('zin').click(); seen.zoomed=state();
  var out=document.createElement('pre'); out.id='result'; out.textContent=JSON.stringify(seen);
  document.body.appendChild(out);
})();
"""


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (see README: Inspecting models)")
def test_page_works_in_a_headless_browser(resnet, tmp_path):
    result, page = resnet
    path = tmp_path / "dump.html"
    path.write_text(page, encoding="utf-8")
    dom, console = render(path, tmp_path / "profile", EXERCISE)
    assert not console, console
    seen = json.loads(re.search(r'<pre id="result">(.*?)</pre>', dom, flags=re.S).group(1).replace("&quot;", '"'))
    nodes, data = len(result.rows), layout_data(page)
    in_groups = sum(1 for node in data["nodes"] if node[2] >= 0)
    first_group = sum(1 for node in data["nodes"] if node[2] == 0)
    drawn = ("nodes", "groups", "tabs", "height", "edges")
    assert [seen["start"][k] for k in drawn] == [seen["unfolded"][k] for k in drawn]
    assert (seen["start"]["nodes"], seen["start"]["groups"], seen["start"]["tabs"]) == (nodes, 0, 2)
    assert (seen["folded"]["nodes"], seen["folded"]["groups"], seen["folded"]["tabs"]) == (nodes - in_groups, 2, 0)
    assert seen["folded"]["height"] < seen["start"]["height"]  # a collapsed block takes one row
    assert seen["folded"]["edges"] < seen["start"]["edges"]
    assert seen["one_open"]["nodes"] == nodes - in_groups + first_group and seen["one_open"]["groups"] == 1
    assert seen["closed_again"] == seen["folded"]
    assert (seen["search"]["hits"], seen["search"]["found"]) == (3, "2 found (Enter: next)")  # and their box
    assert seen["next"]["found"].startswith("1 of ") and seen["next"]["groups"] == 1  # opened to show the hit
    assert seen["zoomed"]["width"] > seen["unfolded"]["width"]
    for column in ("SQNR dB", "own dB", "worst channel dB", "cosine"):
        assert f"<th>{column}</th>" in dom
