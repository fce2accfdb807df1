"""The dump's output formats: JSON against its documented schema, DOT that parses, a self-contained HTML page."""

import json
import re
import shutil
import subprocess

import jsonschema
import pydot
import pytest

from fxq.dump.json_format import SCHEMA, VERSION
from tests.dump.helpers import FACTORIES, dump_text
from tests.html_checks import Checker, browser, render

STAGES = ("traced", "fused", "prepared", "calibrated", "converted")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", ["resnet", "transformer", "mixed"])
def test_json_validates_against_the_schema(name, stage):
    document = json.loads(dump_text(name, "--stage", stage, "--calibration", "2", fmt="json"))
    jsonschema.validate(document, SCHEMA)
    assert document["fxq_dump_version"] == VERSION and document["stage"] == stage
    names = {node["name"] for node in document["nodes"]}
    assert all(source in names for node in document["nodes"] for source in node["inputs"])


def test_json_with_passes_and_comparison_validates():
    document = json.loads(dump_text("mlp", "--after-all", fmt="json"))
    jsonschema.validate(document, SCHEMA)
    assert [p["name"] for p in document["passes"]] == ["normalize", "fuse", "name-nodes", "assign-qconfig",
                                                        "assign-precision", "insert-observers", "lower",
                                                        "cleanup", "name-nodes"]
    assert document["comparison"] and all("own_sqnr_db" in layer for layer in document["comparison"])


def test_schema_rejects_a_broken_document():
    document = json.loads(dump_text("mlp", fmt="json"))
    document["nodes"][0]["category"] = "sideways"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_dot_parses_and_styles_node_kinds_apart(name):
    text = dump_text(name, fmt="dot")
    graphs = pydot.graph_from_dot_data(text)
    assert graphs and len(graphs) == 1
    graph = graphs[0]
    nodes = {node.get_name().strip('"'): node for node in graph.get_nodes() if node.get_name() not in ("node",)}
    assert len(graph.get_edges()) > 0
    styles = {(node.get("shape"), node.get("fillcolor")) for node in nodes.values()}
    assert len(styles) >= 3  # io, boundary and quantized at least
    if name == "untraceable":
        assert nodes["gate"].get("fillcolor") == '"#ffd6a5"'  # float


@pytest.mark.parametrize("name", ["resnet", "transformer", "untraceable"])
def test_html_is_well_formed_and_self_contained(name):
    page = dump_text(name, "--calibration", "2", fmt="html")
    checker = Checker()
    checker.feed(page)
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert {"svg", "table", "script", "style"} <= checker.tags
    assert not re.search(r"https?:", page), "no external references"
    assert "<script src" not in page and "@import" not in page and "url(" not in page
    assert page.count('<tr id="row-') > 5


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (see README: Inspecting models)")
def test_html_renders_in_a_headless_browser_without_console_errors(tmp_path):
    page = tmp_path / "dump.html"
    page.write_text(dump_text("resnet", "--calibration", "2", fmt="html"), encoding="utf-8")
    dom, console = render(page, tmp_path / "profile")
    assert 'id="graph"' in dom
    assert not console, console


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed")
def test_html_script_is_valid_javascript(tmp_path):
    page = dump_text("mlp", fmt="html")
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1
    source = tmp_path / "page.js"
    source.write_text(scripts[0], encoding="utf-8")
    result = subprocess.run(["node", "--check", str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # and it runs: a minimal stand-in for the page's elements, then every control is used once
    stub = """
    var made = {};
    function element(id) { return made[id] = made[id] || {id: id, attrs: {width: '300', 'data-h': '200'},
      clientWidth: 150, value: 'fc', style: {}, textContent: 'fc1 linear',
      getAttribute: function (k) { return this.attrs[k]; }, setAttribute: function (k, v) { this.attrs[k] = v; }}; }
    var document = {getElementById: element, querySelectorAll: function () { return [element('r1'), element('r2')]; }};
    """
    check = "\n;['zin', 'zout', 'zfit'].forEach(function (id) { made[id].onclick(); }); made.filter.oninput();" \
            "\nif (made.graph.attrs.width === '300') { throw new Error('zoom did nothing'); }"
    runner = tmp_path / "run.js"
    runner.write_text(stub + scripts[0] + check, encoding="utf-8")
    result = subprocess.run(["node", str(runner)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
