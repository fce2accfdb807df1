"""QConfigMapping as JSON: round trips that quantize the same way, and loads that refuse tampered or foreign
text without running anything it names."""

import functools
import json
import operator
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.errors import ConfigError, LoadError
from fxq.observers import MinMaxObserver, PlaceholderObserver
from tests.models import calibration_batches, example_inputs, make_model


def every_rule() -> fxq.QConfigMapping:
    static = fxq.get_default_qconfig("x86")
    minmax = fxq.QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
                         weight=static.weight)
    return (fxq.QConfigMapping().set_global(static)
            .set_object_type(nn.Linear, minmax).set_object_type(F.relu, None).set_object_type(operator.add, static)
            .set_object_type("sigmoid", None)
            .set_module_name_regex("fc[23]", minmax)
            .set_module_name("fc3", None)
            .set_module_name("fc2", fxq.get_default_dynamic_qconfig(torch.float16, "x86"))
            .set_module_name_object_type_order("", nn.Linear, 0, static))


MAPPINGS = {"x86": lambda: fxq.get_default_qconfig_mapping("x86"),
            "qnnpack": lambda: fxq.get_default_qconfig_mapping("qnnpack"),
            "reference": lambda: fxq.get_default_qconfig_mapping("reference"),
            "every_rule": every_rule}


def quantized(mapping: fxq.QConfigMapping):
    return fxq.quantize(make_model("mlp"), example_inputs("mlp"), calibration_batches("mlp", n=2),
                        qconfig_mapping=mapping, runtime="graph")


@pytest.mark.parametrize("name", MAPPINGS)
def test_round_trip_is_equal_and_quantizes_the_same(name):
    mapping = MAPPINGS[name]()
    loaded = fxq.QConfigMapping.from_json(mapping.to_json())
    assert repr(loaded) == repr(mapping)
    assert loaded.to_dict() == mapping.to_dict()
    original, again = quantized(mapping), quantized(loaded)
    assert again.code == original.code
    assert str(again) == str(original)  # the same modules, with the same qparams
    x = example_inputs("mlp", seed=5)[0]
    torch.testing.assert_close(again(x), original(x), rtol=0, atol=0)


def test_text_is_plain_json():
    text = every_rule().to_json()
    data = json.loads(text)
    assert data["format"] == 1
    assert data["object_type"][0][0] == "torch.nn.modules.linear:Linear"
    assert data["global"]["activation"]["args"] == {"dtype": "torch.quint8"}
    assert "<" not in text and "with_args" not in text and "QConfig(" not in text


def test_unset_global_stays_unset():
    mapping = fxq.QConfigMapping().set_object_type(nn.Linear, None)
    assert "global" not in json.loads(mapping.to_json())
    loaded = fxq.QConfigMapping.from_json(mapping.to_json())
    assert "" not in loaded.to_dict()
    assert loaded.resolve(module_path="x", module_type=nn.Conv2d).rule == "default(float)"
    float_global = fxq.QConfigMapping.from_json(fxq.QConfigMapping().set_global(None).to_json())
    assert float_global.to_dict()[""] is None


@pytest.mark.parametrize("where", ["observer", "object_type", "order_type"])
def test_tampered_names_are_refused_without_running_them(where, monkeypatch):
    ran = []
    monkeypatch.setattr(os, "system", lambda *args: ran.append(args))
    data = json.loads(every_rule().to_json())
    if where == "observer":
        data["global"]["activation"]["observer"] = "os:system"
    elif where == "object_type":
        data["object_type"][0][0] = "os:system"
    else:
        data["module_name_object_type_order"][0][1] = "os:system"
    with pytest.raises(LoadError, match="os:system"):
        fxq.QConfigMapping.from_json(json.dumps(data))
    assert not ran


def test_user_class_of_a_module_not_imported_says_to_import_it():
    data = json.loads(fxq.QConfigMapping().to_json())
    data["object_type"] = [["not_imported_pkg.layers:Block", None]]
    with pytest.raises(LoadError, match="import not_imported_pkg"):
        fxq.QConfigMapping.from_json(json.dumps(data))


@pytest.mark.parametrize("text", ['{"format": 2}', '{"object_type": []}', "[1]", "not json",
                                  '{"format": 1, "extra": []}', '{"format": 1, "module_name": [["fc1"]]}',
                                  '{"format": 1, "module_name": [["", null]]}'])
def test_foreign_or_damaged_text_is_a_load_error(text):
    with pytest.raises(LoadError):
        fxq.QConfigMapping.from_json(text)


def local_op(x):
    return x


@pytest.mark.parametrize(("factory", "match"), [
    (lambda: MinMaxObserver(), "lambda"),
    (functools.partial(MinMaxObserver, dtype=torch.quint8), "partial"),
    (PlaceholderObserver.with_args(dtype=object()), "object"),
])
def test_unrepresentable_factories_are_config_errors(factory, match):
    mapping = fxq.QConfigMapping().set_module_name("fc1", fxq.QConfig(activation=factory))
    with pytest.raises(ConfigError, match=rf"module_name\('fc1'\).*{match}.*supported"):
        mapping.to_json()


def test_unrepresentable_object_type_is_a_config_error():
    mapping = fxq.QConfigMapping().set_object_type(local_op, None)
    with pytest.raises(ConfigError, match="object_type.*local_op.*supported"):
        mapping.to_json()
