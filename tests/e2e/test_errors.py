"""Bad input gets an FxqError that names the module or node, and the user's model is never changed."""

import pytest
import torch
from torch import nn

import fxq
from fxq.errors import CalibrationError, ConfigError, TraceError
from tests.models import make_model


def _mapping():
    return fxq.get_default_qconfig_mapping("reference")


def _mlp():
    return make_model("mlp"), (torch.randn(2, 64),)


def test_nan_in_calibration_names_the_node():
    model, example = _mlp()
    prepared = fxq.prepare(model, _mapping(), example)
    bad = torch.randn(2, 64)
    bad[1, 3] = float("nan")
    with pytest.raises(CalibrationError, match="node 'x'.*NaN or Inf"):
        prepared(bad)


def test_inf_inside_the_network_names_the_node_it_reaches():
    class Blowup(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.fc2(torch.exp(self.fc1(x)))

    model = Blowup().eval()
    prepared = fxq.prepare(model, _mapping(), (torch.randn(1, 4),))
    with pytest.raises(CalibrationError, match="node 'exp'"):
        prepared(torch.full((1, 4), 1e4))


def test_convert_before_calibration_names_the_node():
    model, example = _mlp()
    prepared = fxq.prepare(model, _mapping(), example)
    with pytest.raises(CalibrationError, match="node 'x' saw no data; run calibration data"):
        fxq.convert(prepared)


def test_rule_naming_a_missing_module():
    model, example = _mlp()
    mapping = _mapping().set_module_name("fc4", None)
    with pytest.raises(ConfigError, match="'fc4'.*did you mean"):
        fxq.prepare(model, mapping, example)


def test_untraceable_root_is_a_trace_error_naming_the_line():
    class Loop(nn.Module):
        def forward(self, x):
            if x.max() > 1:
                return x
            return -x

    with pytest.raises(TraceError, match=r"root module Loop.*\n.*if x.max\(\) > 1:"):
        fxq.prepare(Loop(), _mapping(), (torch.randn(2),))


def test_wrong_example_inputs_and_wrong_types():
    model, _ = _mlp()
    with pytest.raises(TraceError, match="example_inputs"):
        fxq.prepare(model, _mapping(), (torch.randn(2, 3),))
    with pytest.raises(ConfigError, match="nn.Module"):
        fxq.prepare("model", _mapping(), (torch.randn(2, 64),))
    with pytest.raises(ConfigError, match="fxq.prepare"):
        fxq.convert(model)
    with pytest.raises(ConfigError, match="unknown backend"):
        fxq.prepare(model, _mapping(), (torch.randn(2, 64),), backend="tpu")


def test_convert_does_not_change_the_prepared_model():
    model, example = _mlp()
    prepared = fxq.prepare(model, _mapping(), example)
    prepared(torch.randn(4, 64))
    code = prepared.code
    first = fxq.convert(prepared)
    second = fxq.convert(prepared)
    assert prepared.code == code
    x = torch.randn(3, 64)
    assert torch.equal(first(x), second(x))
