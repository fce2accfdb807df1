"""``fxq tune`` on the command line and its HTML report: the files it writes load back (the mapping rebuilds the
tuned model exactly), the page is well formed, self-contained and renders in a real headless browser."""

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import warnings

import fxq.tools.tune as tune_tool
import pytest
import torch

import fxq
from fxq.cli import main
from fxq.errors import FxqWarning
from fxq.tuning import LayerTuning, TunePoint, TuneReport
from fxq.tuning.html import tune_html
from tests.html_checks import Checker, browser, render

MLP = ["tests.models:MLP", "--input-shape", "4,64"]  # the fastest target `fxq dump` is tested on


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``fxq tune`` run of the MLP writing every file, and what it tuned (caught on the way out of build)."""
    out = tmp_path_factory.mktemp("tune")
    paths = {name: out / f"tuned.{name}" for name in ("html", "json", "mapping")}
    caught = []

    def build(args):
        caught.append(real_build(args))
        return caught[-1]

    real_build = tune_tool.build
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        patch.setattr(tune_tool, "build", build)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["tune", *MLP, "--calibration", "8", "--max-evaluations", "6",
                         *[option for name, path in paths.items() for option in (f"--{name}", str(path))]])
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "paths": paths,
            "tuned": caught[0], "dir": out}


def test_cli_prints_the_report_and_writes_json_and_mapping(run):
    assert run["code"] == 0, run["stderr"]
    assert run["stdout"].startswith("metric proxy: mean output cosine")
    assert "fxq tune: searching" in run["stderr"]  # stderr is not a terminal here: one line per stage change
    report = json.loads(run["paths"]["json"].read_text(encoding="utf-8"))
    assert [layer["path"] for layer in report["layers"]] == ["fc1", "fc2", "fc3"]
    assert report["points"] and sum(point["chosen"] for point in report["points"]) == 1
    assert report["evaluations"] <= 6 and report["backend"] == "x86"
    assert sum(report["counts"].values()) == 3


def test_the_mapping_rebuilds_the_tuned_model_exactly(run):
    tuned = run["tuned"]
    mapping = fxq.QConfigMapping.from_json(run["paths"]["mapping"].read_text(encoding="utf-8"))
    held_out = max(1, len(tuned.calibration) // 4)  # the built-in metric scores plans on the last quarter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        again = fxq.quantize(tuned.model, tuned.example_inputs, tuned.calibration[:-held_out], backend="x86",
                             qconfig_mapping=mapping)
    with torch.no_grad():
        for batch in [tuned.example_inputs, *tuned.calibration]:
            assert torch.equal(again(*batch), tuned.result.model(*batch))


def test_cli_without_example_inputs_is_a_user_error(capsys):
    assert main(["tune", "tests.models:MLP", "--quiet"]) == 2
    assert "--input-shape" in capsys.readouterr().err


def _assert_self_contained(page: str) -> None:
    checker = Checker()
    checker.feed(page)
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert {"svg", "table", "script", "style", "circle", "title"} <= checker.tags
    assert not re.search(r"https?:|//[a-z]", page), "no external references"
    assert "<script src" not in page and "@import" not in page and "url(" not in page and "<link" not in page
    assert page.count("<script>") == 1


def test_cli_html_is_well_formed_and_self_contained(run):
    page = run["paths"]["html"].read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert 'id="pareto"' in page and 'id="sensitivity"' in page and 'id="chosen-point"' in page
    assert all(f'id="layer-{path}"' in page for path in ("fc1", "fc2", "fc3"))


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (see README: Inspecting models)")
def test_html_renders_in_a_headless_browser_without_console_errors(run):
    dom, console = render(run["paths"]["html"], run["dir"] / "profile")
    assert re.search(r'<svg[^>]* id="pareto"', dom)
    assert 'id="chosen-point"' in dom and re.search(r'class="point \w+ chosen"', dom)
    assert not console, console


def _report(met: bool) -> TuneReport:
    """A hand-made report: three layers (one exact, one kept float for speed, one never timed), three plans."""
    layers = [LayerTuning("enc.fc<1>", "linear", 14.2, 0.10, 0.20, "int8", "the search keeps it int8"),
              LayerTuning("enc.fc2", "linear_relu", None, 0.30, 0.10, "float", "int8 is slower here", for_speed=True),
              LayerTuning("head", "conv", math.inf, None, None, "int8-dynamic", "adds the most error & <more>")]
    points = [TunePoint("int8 everywhere", {}, 3, 0.80, 1.0, False),
              TunePoint("top 1 at float", {"head": "float"}, 2, 0.91 if not met else 0.945, 1.2, met, True),
              TunePoint("top 3 at float", {}, 0, 0.93, 1.9, False)]
    return TuneReport(metric="evaluate", float_score=0.95, max_drop=0.01, score=points[1].score, latency_ms=1.2,
                      float_latency_ms=2.0, evaluations=4, layers=layers, points=points,
                      suggestions=[] if met else ["Allow more <evaluations> & retry."], threads=2, backend="x86")


def test_html_of_a_missed_budget_shows_suggestions_and_no_chosen_meets_marker():
    report = _report(met=False)
    page = tune_html(report, "tune <model> & co")
    _assert_self_contained(page)
    assert "<title>tune &lt;model&gt; &amp; co</title>" in page
    assert "misses the budget by 0.03" in page and 'id="suggestions"' in page
    assert "<li>Allow more &lt;evaluations&gt; &amp; retry.</li>" in page
    assert 'class="point misses chosen"' in page and 'class="point meets' not in page
    assert "chosen: top 1 at float (misses the budget)" in page
    assert 'class="budget"' in page and 'class="float-latency"' in page
    assert "enc.fc<1>" not in page and "enc.fc&lt;1&gt;" in page


def test_html_of_a_met_budget_with_an_exact_layer():
    report = _report(met=True)
    assert report.met
    page = tune_html(report, "tuned")
    _assert_self_contained(page)
    assert 'id="verdict">meets the budget' in page and 'id="suggestions"' not in page
    assert 'class="point meets chosen"' in page
    exact = re.search(r'<tr id="layer-enc.fc2"[^>]*>(.*?)</tr>', page).group(0)
    assert ">exact<" in exact and 'class="speed"' in exact  # None dB is exact; int8 3x slower: kept float
    assert "exact (adds no error)" in page
    head = re.search(r'<tr id="layer-head"[^>]*>(.*?)</tr>', page).group(0)
    assert "speed" not in head and 'class="times"></td>' in head  # not timed: no bars


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed")
def test_html_script_is_valid_javascript(tmp_path):
    script = re.findall(r"<script>(.*?)</script>", tune_html(_report(met=True), "t"), flags=re.S)[0]
    source = tmp_path / "page.js"
    source.write_text(script, encoding="utf-8")
    result = subprocess.run(["node", "--check", str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_one_line_on_a_terminal_and_logs_stage_changes_elsewhere():
    steps = [("searching", 1, 40), ("calibrating", 1, 2), ("calibrating", 2, 2), ("timing layers", 1, 1),
             ("searching", 2, 40)]
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = tune_tool.Progress(stream)
        for step in steps:
            progress(*step)
        progress.close()
    drawn = terminal.getvalue()
    assert drawn.count("\r") == len(steps) and drawn.count("\n") == 2  # the bars' line, then "done"
    last = drawn.split("\r")[-1].splitlines()[0]
    assert re.match(r"searching \[#?\.+\] 2/40  calibrating \[#+\] 2/2  timing layers \[#+\] 1/1", last)
    assert log.getvalue().splitlines()[:-1] == ["fxq tune: searching 1/40", "fxq tune: calibrating 1/2",
                                                "fxq tune: timing layers 1/1", "fxq tune: searching 2/40"]
    quiet = io.StringIO()
    silent = tune_tool.Progress(quiet, enabled=False)
    silent("searching", 1, 2)
    silent.close()
    assert quiet.getvalue() == ""
