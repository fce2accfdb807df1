"""prepare/convert/quantize(passes=...): passes inserted at named points or whole pipelines, all checked before a
pass runs; the convert-side changes travel with the prepared model."""

from dataclasses import dataclass

import pytest
import torch
from fxq.passes.smooth import Smooth
from torch import nn

import fxq
from fxq.pipelines import PassEdits, parse_passes
from tests.dump.helpers import dump

MODEL = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
X = torch.randn(2, 3, 8, 8)
RUNS: list[str] = []


@fxq.register_pass
@dataclass(frozen=True)
class Tally(fxq.GraphPass):
    """Counts its runs: the tests see whether anything ran before a pipeline was refused."""

    name = "test-tally"
    label: str = "tally"

    def run(self, gm, ctx):
        RUNS.append(self.label)
        return gm


def _names(gm):
    return [record.name for record in fxq.pass_records(gm)]


@pytest.mark.parametrize("given", [
    {"after fuse": ["equalize"], "before lower": "test-tally{label='x'}"},
    "after fuse: equalize; before lower: test-tally{label='x'}",
    {"after  fuse": fxq.get_pass("equalize")(), "before lower": [Tally(label="x")]},
])
def test_the_forms_of_passes_read_the_same(given):
    assert parse_passes(given) == PassEdits(insertions=(("after", "fuse", (("equalize", {}),)),
                                                        ("before", "lower", (("test-tally", {"label": "x"}),))))


def test_a_bare_spec_or_list_is_the_whole_prepare_pipeline():
    expected = PassEdits(prepare=(("normalize", {}), ("fuse", {})))
    assert parse_passes("normalize,fuse") == expected == parse_passes(["normalize", "fuse"])


@pytest.mark.parametrize("given, message", [
    ({"sideways fuse": "equalize"}, "use 'after PASS', 'before PASS'"),
    ({"after fuse": "no-such-pass"}, "no pass named 'no-such-pass'"),
    ({"after no-such-pass": "equalize"}, "no pass named 'no-such-pass'"),
    ({"after fuse": [3]}, "neither a pass name nor a GraphPass"),
    ("normalize; after fuse: x", "give one pipeline spec"),
    (42, "passes= takes a pipeline spec"),
])
def test_malformed_passes_are_config_errors(given, message):
    with pytest.raises(fxq.ConfigError, match=message):
        parse_passes(given)


def test_insertions_land_at_their_points_around_the_recipe_passes():
    quantized = fxq.quantize(MODEL, (X,), [(X,)], passes={"after fuse": "equalize", "before lower": "test-tally"},
                             runtime="graph")  # recipe "auto": cnn, with its own statistics passes
    assert _names(quantized) == ["normalize", "fuse", "equalize", "name-nodes", "assign-qconfig", "assign-precision",
                                 "insert-observers", "observe-clamped", "record-calibration-sample", "record-input-statistics",
                                 "bias-correction", "sensitivity-ranges", "test-tally", "lower", "cleanup",
                                 "name-nodes"]


def test_convert_side_insertions_travel_with_the_prepared_model_through_save_and_load(tmp_path):
    prepared = fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,), recipe="none",
                           passes={"before cleanup": Tally(label="kept")})
    prepared(X)
    fxq.save(prepared, tmp_path / "prepared.pt")
    RUNS.clear()
    converted = fxq.convert(fxq.load(tmp_path / "prepared.pt"), passes={"after cleanup": Tally(label="added")})
    assert RUNS == ["kept", "added"]
    assert _names(converted)[-4:] == ["test-tally", "cleanup", "test-tally", "name-nodes"]


def test_a_whole_convert_pipeline_replaces_the_default():
    prepared = fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,), recipe="none")
    prepared(X)
    converted = fxq.convert(prepared, passes={"convert": "lower"})
    assert _names(converted)[-1] == "lower" and "cleanup" not in _names(converted)
    assert fxq.metrics.sqnr_db(MODEL(X), converted(X)) > 25


def test_a_whole_prepare_pipeline_runs_as_given_without_the_recipe_passes():
    prepared = fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,),
                           passes="normalize,fuse,assign-qconfig,insert-observers")  # recipe "auto" chose cnn
    assert _names(prepared) == ["normalize", "fuse", "assign-qconfig", "insert-observers"]
    assert prepared.meta["fxq_recipe"]["name"] == "cnn"


def test_convert_refuses_a_prepare_pipeline():
    prepared = fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,))
    prepared(X)
    with pytest.raises(fxq.ConfigError, match="prepare's pipeline ran already"):
        fxq.convert(prepared, passes="lower,cleanup")
    with pytest.raises(fxq.ConfigError, match="'fuse' is not in convert's pipeline"):
        fxq.convert(prepared, passes={"after fuse": "test-tally"})


@pytest.mark.parametrize("passes, error, message", [
    ({"after fuse": "smooth"}, fxq.PassOrderError, r"'smooth' requires \['input_statistics', 'observed'\]"),
    ({"before lower": "fuse"}, fxq.PassOrderError, r"'fuse' provides what the graph has already \('fused' by"),
    ({"after fake-quantize": "test-tally"}, fxq.ConfigError, "runs in neither pipeline; prepare runs normalize"),
])
def test_a_broken_pipeline_is_refused_before_any_pass_runs(passes, error, message):
    RUNS.clear()
    with pytest.raises(error, match=message):
        fxq.quantize(MODEL, (X,), [(X,)], passes={"after normalize": "test-tally", **passes})
    assert RUNS == []


def test_a_pass_with_options_runs_where_it_was_put():
    prepared = fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,), recipe="none",
                           passes={"after insert-observers": "record-input-statistics",
                                   "before lower": "smooth{min_gain_db=100.0}"})
    prepared(X)
    assert _names(fxq.convert(prepared))[-4] == "smooth"
    assert parse_passes({"before lower": Smooth(min_gain_db=7.0)}).insertions[0][2] == (("smooth", {"min_gain_db": 7.0}),)


def test_dump_takes_passes_and_shows_the_graph_after_an_inserted_one():
    result = dump("resnet", "--passes", "after fuse: equalize", "--after", "equalize")
    assert result.after_pass == "equalize" and result.stage == "calibrated"
