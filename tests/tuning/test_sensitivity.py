"""Per-layer sensitivity: each int8 kernel on the float model's exact inputs, against its float output."""

import torch
from torch import nn

from fxq.metrics import sqnr_db
from fxq.tuning.sensitivity import layer_sensitivity
from tests.tuning.models import OneOutlier, batches, prepared_and_converted


def test_a_single_layer_model_sensitivity_is_its_output_sqnr():
    torch.manual_seed(0)
    model = nn.Linear(32, 16).eval()
    data = batches(32, 2)
    prepared, converted = prepared_and_converted(model, data[0], data)
    own = layer_sensitivity(prepared, converted, data[:1])
    with torch.no_grad():
        expected = sqnr_db(model(*data[0]), converted(*data[0]))
    assert set(own) == {""} or set(own) == set()  # a root Linear has no module path to name in a plan
    model = nn.Sequential(nn.Linear(32, 16)).eval()
    prepared, converted = prepared_and_converted(model, data[0], data)
    own = layer_sensitivity(prepared, converted, data[:1])
    with torch.no_grad():
        expected = sqnr_db(model(*data[0]), converted(*data[0]))
    assert abs(own["0"] - expected) < 0.05, (own, expected)


def test_the_layer_fed_an_outlier_channel_ranks_worst():
    model = OneOutlier().eval()
    data = batches(32, 4)
    prepared, converted = prepared_and_converted(model, data[0], data)
    own = layer_sensitivity(prepared, converted, data[:2])
    assert set(own) == {"fc1", "fc2", "fc3"}
    assert min(own, key=own.get) == "fc2"
    assert own["fc2"] < min(own["fc1"], own["fc3"]) - 10, own
