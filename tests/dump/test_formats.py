"""The dump's output formats: JSON against its documented schema, DOT that parses, a self-contained HTML page
(whose graph, controls and columns tests/dump/test_html_page.py checks, in a browser too)."""

import json
import re

import jsonschema
import pydot
import pytest

from fxq.dump.json_format import SCHEMA, VERSION
from tests.dump.helpers import FACTORIES, dump_text
from tests.html_checks import Checker

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
                                                        "assign-precision", "insert-observers",
                                                        "observe-clamped", "record-calibration-sample", "sensitivity-ranges", "lower",
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
