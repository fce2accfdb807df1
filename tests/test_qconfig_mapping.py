"""QConfigMapping precedence, rule by rule. Each test sets a lower-precedence rule, then the next one up, and
checks the higher one wins, for module calls and function calls."""

import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxq.errors import ConfigError, FxqWarning
from fxq.observers import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
from fxq.qconfig import QConfig, get_default_qconfig
from fxq.qconfig_mapping import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping

A = QConfig(activation=MinMaxObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())
B = QConfig(activation=MinMaxObserver.with_args(reduce_range=True), weight=PerChannelMinMaxObserver.with_args())
C = QConfig(activation=HistogramObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())
D = QConfig(activation=MinMaxObserver.with_args(dtype=torch.qint8), weight=None)


class Block(nn.Module):
    pass


def module_call(mapping, path="features.0.conv", module_type=nn.Conv2d, order=("features.0", nn.Conv2d, 0)):
    return mapping.resolve(module_path=path, module_type=module_type, order_key=order)


def function_call(mapping, function=operator.add, path="features.0", module_type=Block, index=0):
    return mapping.resolve(module_path=path, module_type=module_type, function=function,
                           order_key=(path, function, index))


def test_nothing_set_means_float():
    assert module_call(QConfigMapping()).qconfig is None
    assert module_call(QConfigMapping()).rule == "default(float)"


def test_global():
    r = module_call(QConfigMapping().set_global(A))
    assert (r.qconfig, r.rule) == (A, "global")


def test_object_type_beats_global_for_modules_and_functions():
    mapping = QConfigMapping().set_global(A).set_object_type(nn.Conv2d, B).set_object_type(operator.add, C)
    assert module_call(mapping).qconfig == B and module_call(mapping).rule == "object_type(Conv2d)"
    r = function_call(mapping)
    assert r.qconfig == C and r.rule == "object_type(_operator.add)"
    assert function_call(mapping, function=operator.mul).qconfig == A


def test_enclosing_module_type_beats_function_type():
    mapping = QConfigMapping().set_global(A).set_object_type(operator.add, C).set_object_type(Block, B)
    assert function_call(mapping).qconfig == B


def test_method_names_are_object_types():
    mapping = QConfigMapping().set_global(A).set_object_type("relu", D)
    assert function_call(mapping, function="relu").qconfig == D


def test_regex_beats_object_type_and_first_match_wins():
    mapping = (QConfigMapping().set_global(A).set_object_type(nn.Conv2d, B)
               .set_module_name_regex(r"features\.\d+\.conv", C).set_module_name_regex(r"features\..*", D))
    r = module_call(mapping)
    assert r.qconfig == C and r.rule == r"module_name_regex('features\\.\\d+\\.conv')"
    assert function_call(mapping).qconfig == D  # the add inside features.0
    assert module_call(mapping, path="head", module_type=nn.Linear).qconfig == A


def test_module_name_beats_regex_and_covers_submodules():
    mapping = (QConfigMapping().set_global(A).set_module_name_regex(r"features\..*", C)
               .set_module_name("features", B))
    r = module_call(mapping)
    assert r.qconfig == B and r.rule == "module_name('features')"
    assert function_call(mapping).qconfig == B


def test_longer_module_name_beats_its_ancestor():
    mapping = QConfigMapping().set_global(A).set_module_name("features", B).set_module_name("features.0", None)
    r = module_call(mapping)
    assert r.qconfig is None and r.rule == "module_name('features.0')"
    assert module_call(mapping, path="features.1.conv").qconfig == B


def test_module_name_prefix_is_by_dotted_path_not_by_string():
    mapping = QConfigMapping().set_global(A).set_module_name("feat", B)
    assert module_call(mapping).qconfig == A  # "features..." is not under "feat"


def test_order_rule_beats_module_name():
    mapping = (QConfigMapping().set_global(A).set_module_name("features", B)
               .set_module_name_object_type_order("features.0", nn.Conv2d, 0, C))
    r = module_call(mapping)
    assert r.qconfig == C and r.rule == "module_name_object_type_order('features.0', Conv2d, 0)"
    assert module_call(mapping, order=("features.0", nn.Conv2d, 1)).qconfig == B
    mapping.set_module_name_object_type_order("features.0", operator.add, 1, D)
    assert function_call(mapping, index=1).qconfig == D
    assert function_call(mapping, index=0).qconfig == B


def test_validate_names_missing_modules_with_suggestions():
    names = {"", "features", "features.0", "features.0.conv", "head"}
    QConfigMapping().set_module_name("features.0", None).validate(names)
    with pytest.raises(ConfigError, match=r"'featurs\.0'.*did you mean 'features\.0'"):
        QConfigMapping().set_module_name("featurs.0", None).validate(names)
    with pytest.raises(ConfigError, match="'body'"):
        QConfigMapping().set_module_name_object_type_order("body", nn.Conv2d, 0, A).validate(names)


def test_regex_matching_nothing_warns():
    with pytest.warns(FxqWarning, match="matches no module"):
        QConfigMapping().set_module_name_regex("decoder.*", None).validate({"", "features"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QConfigMapping().set_module_name_regex("feat.*", None).validate({"", "features"})


def test_setter_type_errors():
    with pytest.raises(ConfigError, match="QConfig or None"):
        QConfigMapping().set_global("int8")
    with pytest.raises(ConfigError, match="object_type"):
        QConfigMapping().set_object_type(3, A)
    with pytest.raises(ConfigError, match="regular expression"):
        QConfigMapping().set_module_name_regex("(", A)
    with pytest.raises(ConfigError, match="index"):
        QConfigMapping().set_module_name_object_type_order("", nn.Linear, -1, A)
    with pytest.raises(ConfigError, match="with_args"):
        QConfig(activation=MinMaxObserver(), weight=None)


def test_dict_round_trip():
    mapping = (QConfigMapping().set_global(A).set_object_type(nn.Linear, B).set_module_name_regex("x.*", C)
               .set_module_name("head", None).set_module_name_object_type_order("", F.relu, 2, D))
    again = QConfigMapping.from_dict(mapping.to_dict())
    assert again.to_dict() == mapping.to_dict()
    assert again.to_dict()[""] == A


def test_defaults_per_backend():
    x86 = get_default_qconfig("x86").activation()
    qnnpack = get_default_qconfig("qnnpack").activation()
    assert isinstance(x86, HistogramObserver) and x86.reduce_range and (x86.quant_min, x86.quant_max) == (0, 127)
    assert not qnnpack.reduce_range and (qnnpack.quant_min, qnnpack.quant_max) == (0, 255)
    weight = get_default_qconfig("x86").weight()
    assert weight.per_channel and weight.symmetric and weight.dtype == torch.qint8
    mapping = get_default_qconfig_mapping("x86")
    sigmoid = mapping.resolve(module_path="", module_type=None, function=torch.sigmoid)
    assert sigmoid.qconfig.activation().scale == pytest.approx(1 / 256)
    assert mapping.resolve(module_path="emb", module_type=nn.Embedding).qconfig is None
    assert get_default_qconfig_mapping("fbgemm").global_qconfig == mapping.global_qconfig
    assert get_default_qat_qconfig_mapping("x86").global_qconfig.activation.cls.__name__ == \
        "MovingAverageMinMaxObserver"
    with pytest.raises(ConfigError, match="known: x86"):
        get_default_qconfig_mapping("tpu")


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_default_settings_match_torch_ao(backend):
    tq = pytest.importorskip("torch.ao.quantization")
    theirs = tq.get_default_qconfig_mapping(backend).to_dict()[""]
    their_act, their_weight = theirs.activation(), theirs.weight()
    ours = get_default_qconfig(backend)
    act, weight = ours.activation(), ours.weight()
    assert act.dtype == their_act.dtype and act.reduce_range == their_act.reduce_range
    assert (act.quant_min, act.quant_max) == (their_act.quant_min, their_act.quant_max)
    assert weight.dtype == their_weight.dtype
    assert weight.symmetric == (their_weight.qscheme in (torch.per_channel_symmetric, torch.per_tensor_symmetric))
