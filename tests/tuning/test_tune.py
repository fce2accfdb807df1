"""fxq.tune: no needless float on a model int8 serves well, a layer too small for int8 kept float with both
times, the layer that costs accuracy found and moved up the ladder, the plan reproducible as mapping rules (and
as JSON), and a budget no plan meets still answered with the best plan found."""

import functools

import pytest
import torch
from fxq.tools.demo import accuracy, load_digits_tensors, train_digits_cnn
from torch.fx import GraphModule

import fxq
from fxq.tuning.proxy import OutputCosine
from tests.tuning.models import OneOutlier, TinyHead, TinyTail, batches


@functools.lru_cache(maxsize=1)
def _digits():
    train_x, train_y, test_x, test_y = load_digits_tensors()
    return train_digits_cnn(train_x, train_y, epochs=4), train_x, test_x, test_y


def test_digits_keeps_every_layer_int8_for_accuracy_and_stays_within_half_a_point():
    model, train_x, test_x, test_y = _digits()
    score = functools.partial(_accuracy, x=test_x, y=test_y)
    calibration = [(b,) for b in train_x[:512].split(64)]
    result = fxq.tune(model, (train_x[:64],), calibration, score, max_drop=0.5, keep_slow_float=False)
    assert result.report.counts() == {"int8": 4}
    assert result.report.evaluations == 2  # the float model and int8 everywhere: nothing more was needed
    assert result.report.met and result.report.score >= accuracy(model, test_x, test_y) - 0.5
    default = fxq.tune(model, (train_x[:64],), calibration, score, max_drop=0.5)
    kept_float = [row for row in default.report.layers if row.precision != "int8"]
    assert all(row.why.startswith("int8 is slower here") for row in kept_float)  # for speed, never for accuracy
    if kept_float:  # only when the whole model was measured faster that way
        assert default.report.notes[0].startswith("float where int8 is slower")


def _accuracy(model, x, y):
    return accuracy(model, x, y)


def test_layers_slower_in_int8_stay_float_and_the_report_and_dump_show_both_times():
    model = TinyTail().eval()  # six slow layers: the whole model is clearly faster with them float, even loaded
    result = fxq.tune(model, (torch.randn(1, 512),), batches(512, 8), runtime="graph")
    tiny = [f"tiny.{index}" for index in range(6)]
    assert all(result.plan.assignments.get(path) == "float" for path in tiny), result.report
    row = next(row for row in result.report.layers if row.path == "tiny.0")
    assert row.int8_ms > row.float_ms and row.precision == "float"
    assert f"{row.int8_ms:.4g} ms" in row.why and f"{row.float_ms:.4g} ms" in row.why
    reasons = {r.name: r.status for r in fxq.inspect(result.model)}
    assert "int8 is slower here" in reasons["tiny_0"] and "search" in reasons["tiny_0"]
    assert "int8 is slower here" in str(result.report)
    assert result.report.notes[0].startswith("float where int8 is slower: ")  # the whole model is faster too


def _tuned_outlier(**options):
    model = OneOutlier().eval()
    data = batches(32, 6)
    held_out = batches(32, 2, seed=1)
    metric = OutputCosine(model, held_out)
    # layers this small are slower in int8 at any batch: the speed rule is off to test the accuracy search alone
    return model, data, fxq.tune(model, data[0], data, metric, runtime="graph", keep_slow_float=False, **options)


def test_the_layer_that_costs_accuracy_is_moved_and_the_others_stay_int8():
    _, _, result = _tuned_outlier()
    report = result.report
    assert not report.points[0].meets_budget  # int8 everywhere misses, so the search had work to do
    assert result.plan.assignments == {"fc2": "float"}, report
    assert min(report.layers, key=lambda row: row.sensitivity_db).path == "fc2"
    assert report.met and report.evaluations <= 8
    assert sum(point.chosen for point in report.points) == 1


def test_the_plan_as_mapping_rules_and_as_json_gives_the_same_model():
    model, data, result = _tuned_outlier()
    x = batches(32, 1, seed=5)[0]
    for mapping in (result.mapping, fxq.QConfigMapping.from_json(result.mapping.to_json())):
        by_hand = fxq.quantize(model, data[0], data, qconfig_mapping=mapping, runtime="graph")
        assert by_hand.code == result.model.code
        with torch.no_grad():
            assert torch.equal(by_hand(*x), result.model(*x))


def test_a_budget_no_plan_meets_returns_the_best_plan_with_what_it_misses_by():
    model = OneOutlier().eval()
    calls = []
    never = _scores_only_float(calls)
    result = fxq.tune(model, batches(32, 1)[0], batches(32, 4), never, max_evaluations=5, runtime="graph",
                      keep_slow_float=False)
    assert len(calls) == result.report.evaluations <= 5
    assert [point.label for point in result.report.points] == [
        "int8 everywhere", "top 3 at int8-dynamic", "top 3 at float"]  # every rung tried, at its widest
    assert isinstance(result.model, GraphModule)
    assert not result.report.met and result.report.missed_by == pytest.approx(0.99)
    assert result.report.suggestions and "MISSES" in str(result.report)


def _scores_only_float(calls: list):
    """A metric every quantized model fails (1.0 for the float model, 0.0 for any other), recording its calls."""
    def score(candidate):
        calls.append(candidate)
        return 0.0 if isinstance(candidate, GraphModule) else 1.0
    return score


def test_the_search_stops_at_max_evaluations():
    calls = []
    never = _scores_only_float(calls)
    result = fxq.tune(OneOutlier().eval(), batches(32, 1)[0], batches(32, 4), never, max_evaluations=3,
                      runtime="graph", keep_slow_float=False)
    assert len(calls) == 3 and "max_evaluations=3" in " ".join(result.report.suggestions)


def test_the_users_model_is_not_changed():
    model = OneOutlier().eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fxq.tune(model, batches(32, 1)[0], batches(32, 4), runtime="graph")
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("options, error", [
    ({"precision": {"fc1": "float"}}, fxq.ConfigError),
    ({"max_drop": -0.1}, fxq.ConfigError),
    ({"evaluate": 3}, fxq.ConfigError),
    ({"evaluate": lambda model: "good"}, fxq.FxqError),
    ({"max_evaluations": 1}, fxq.ConfigError),
])
def test_bad_options_are_refused_with_the_fix(options, error):
    with pytest.raises(error):
        fxq.tune(OneOutlier().eval(), batches(32, 1)[0], batches(32, 4), **options)


def test_no_calibration_data_is_an_error():
    with pytest.raises(fxq.CalibrationError):
        fxq.tune(OneOutlier().eval(), batches(32, 1)[0], [])


def test_the_reference_backend_simulates_int8_so_no_layer_is_kept_float_for_speed():
    model = TinyHead().eval()
    result = fxq.tune(model, (torch.randn(1, 512),), batches(512, 8), backend="reference", runtime="graph")
    assert result.report.counts() == {"int8": 2} and not result.report.notes
