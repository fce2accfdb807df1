"""QConfig and QConfigMapping: precedence rule by rule (for module calls and for function calls), the rule
strings, validation, the dict form and the default qconfigs per backend, checked against torch.ao where it is
importable.

The mapping tests use sentinel QConfigs built from plain functions, so they test rule resolution alone.
"""

import dataclasses
import functools
import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.errors import ConfigError, FxqWarning
from fxq.qconfig import QConfig, get_default_qconfig
from fxq.qconfig_mapping import (
    QConfigMapping,
    Resolution,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)


def act_a():
    """Sentinel observer factories: resolution never calls them."""


def act_b():
    pass


def act_c():
    pass


def act_d():
    pass


def act_e():
    pass


def weight_w():
    pass


A, B, C, D, E = (QConfig(activation=f, weight=weight_w) for f in (act_a, act_b, act_c, act_d, act_e))


class Block(nn.Module):
    pass


def module_call(mapping, path="features.0.conv", module_type=nn.Conv2d, order=("features.0", nn.Conv2d, 0)):
    """Resolve a call_module node: the order key is (parent path, class, index in the parent)."""
    return mapping.resolve(module_path=path, module_type=module_type, order_key=order)


def function_call(mapping, function=F.relu, path="features.0", module_type=Block, index=0):
    """Resolve a call_function/call_method node inside module ``path``: order key (path, function, index)."""
    return mapping.resolve(module_path=path, module_type=module_type, function=function,
                           order_key=(path, function, index))


# ---- precedence, one level at a time -----------------------------------------------------------------------

MODULE_LADDER = [
    (lambda m: m.set_global(A), A, "global"),
    (lambda m: m.set_object_type(nn.Conv2d, B), B, "object_type(Conv2d)"),
    (lambda m: m.set_module_name_regex(r"features\.0", C), C, r"module_name_regex('features\\.0')"),
    (lambda m: m.set_module_name("features.0", D), D, "module_name('features.0')"),
    (lambda m: m.set_module_name_object_type_order("features.0", nn.Conv2d, 0, E), E,
     "module_name_object_type_order('features.0', Conv2d, 0)"),
]

FUNCTION_LADDER = [
    (lambda m: m.set_global(A), A, "global"),
    (lambda m: m.set_object_type(F.relu, B), B, "object_type(torch.nn.functional.relu)"),
    (lambda m: m.set_object_type(Block, C), C, "object_type(Block)"),  # the enclosing module's type
    (lambda m: m.set_module_name_regex("feat", D), D, "module_name_regex('feat')"),
    (lambda m: m.set_module_name("features", E), E, "module_name('features')"),
    (lambda m: m.set_module_name_object_type_order("features.0", F.relu, 0, None), None,
     "module_name_object_type_order('features.0', torch.nn.functional.relu, 0)"),
]


@pytest.mark.parametrize(("ladder", "call"), [(MODULE_LADDER, module_call), (FUNCTION_LADDER, function_call)],
                         ids=["module", "function"])
def test_each_level_overrides_the_one_below(ladder, call):
    mapping = QConfigMapping()
    assert call(mapping) == Resolution(None, "default(float)")
    for add_rule, qconfig, rule in ladder:
        add_rule(mapping)
        assert call(mapping) == Resolution(qconfig, rule)


@pytest.mark.parametrize(("ladder", "call"), [(MODULE_LADDER, module_call), (FUNCTION_LADDER, function_call)],
                         ids=["module", "function"])
def test_precedence_does_not_depend_on_the_order_rules_are_set(ladder, call):
    mapping = QConfigMapping()
    _, top_qconfig, top_rule = ladder[-1]
    for add_rule, _, _ in reversed(ladder):
        add_rule(mapping)
        assert call(mapping) == Resolution(top_qconfig, top_rule)


def test_function_object_type_applies_where_the_enclosing_module_has_no_rule():
    mapping = QConfigMapping().set_global(A).set_object_type(operator.add, B).set_object_type(nn.Linear, C)
    assert function_call(mapping, function=operator.add) == Resolution(B, "object_type(operator.add)")
    assert function_call(mapping, function=operator.mul) == Resolution(A, "global")
    top_level = mapping.resolve(module_path="", module_type=None, function=torch.sigmoid)
    assert top_level == Resolution(A, "global")
    mapping.set_object_type(torch.sigmoid, D)
    top_level = mapping.resolve(module_path="", module_type=None, function=torch.sigmoid)
    assert top_level == Resolution(D, "object_type(torch.sigmoid)")


def test_method_names_are_object_types_distinct_from_functions():
    mapping = QConfigMapping().set_global(A).set_object_type("relu", B)
    assert function_call(mapping, function="relu") == Resolution(B, "object_type('relu')")
    assert function_call(mapping, function=F.relu) == Resolution(A, "global")
    assert function_call(mapping, function=torch.relu) == Resolution(A, "global")


def test_none_leaves_float_and_a_higher_rule_can_quantize_again():
    mapping = QConfigMapping().set_global(A).set_object_type(nn.Linear, None)
    head = module_call(mapping, path="head", module_type=nn.Linear, order=("", nn.Linear, 0))
    assert head == Resolution(None, "object_type(Linear)")
    mapping.set_module_name("head", B)
    head = module_call(mapping, path="head", module_type=nn.Linear, order=("", nn.Linear, 0))
    assert head == Resolution(B, "module_name('head')")
    assert QConfigMapping().set_global(None).resolve(module_path="x", module_type=nn.ReLU) == \
        Resolution(None, "global")


# ---- module_name: the closest dotted ancestor --------------------------------------------------------------

def test_module_name_covers_submodules_and_the_longest_name_wins():
    mapping = (QConfigMapping().set_global(A).set_module_name("features", B)
               .set_module_name("features.0", None))
    assert module_call(mapping, path="features.0.conv") == Resolution(None, "module_name('features.0')")
    assert module_call(mapping, path="features.0") == Resolution(None, "module_name('features.0')")
    assert module_call(mapping, path="features.1.conv") == Resolution(B, "module_name('features')")
    assert module_call(mapping, path="features") == Resolution(B, "module_name('features')")
    assert module_call(mapping, path="head") == Resolution(A, "global")
    assert function_call(mapping, path="features.1") == Resolution(B, "module_name('features')")


def test_module_name_prefix_is_by_dotted_path_not_by_string():
    mapping = QConfigMapping().set_global(A).set_module_name("feat", B).set_module_name("features.1", C)
    assert module_call(mapping, path="features.0.conv") == Resolution(A, "global")
    assert module_call(mapping, path="features.10") == Resolution(A, "global")


def test_module_name_never_names_the_root():
    with pytest.raises(ConfigError, match=r"set_global"):
        QConfigMapping().set_module_name("", A)


# ---- module_name_regex: re.match, first match wins ---------------------------------------------------------

def test_first_matching_regex_wins():
    mapping = (QConfigMapping().set_global(A).set_module_name_regex(r"features\..*", B)
               .set_module_name_regex(r"features\.0\..*", C))
    assert module_call(mapping) == Resolution(B, r"module_name_regex('features\\..*')")
    mapping = (QConfigMapping().set_global(A).set_module_name_regex(r"features\.0\..*", C)
               .set_module_name_regex(r"features\..*", B))
    assert module_call(mapping) == Resolution(C, r"module_name_regex('features\\.0\\..*')")
    assert module_call(mapping, path="features.1.conv") == \
        Resolution(B, r"module_name_regex('features\\..*')")


def test_regex_is_matched_from_the_start_of_the_path():
    mapping = QConfigMapping().set_global(A).set_module_name_regex("conv", B)
    assert module_call(mapping) == Resolution(A, "global")
    mapping.set_module_name_regex(".*conv", C)
    assert module_call(mapping) == Resolution(C, "module_name_regex('.*conv')")


def test_regex_also_covers_top_level_function_calls():
    """torch.ao matches regexes against the root path "" too, so ".*" reaches functions called in forward."""
    mapping = QConfigMapping().set_global(A).set_module_name_regex(".*", None)
    assert mapping.resolve(module_path="", module_type=None, function=operator.add) == \
        Resolution(None, "module_name_regex('.*')")


# ---- module_name_object_type_order -------------------------------------------------------------------------

def test_order_rule_matches_only_its_parent_type_and_index():
    mapping = (QConfigMapping().set_global(A).set_module_name_object_type_order("", nn.Linear, 1, B)
               .set_module_name_object_type_order("block", operator.add, 0, C))
    second = Resolution(B, "module_name_object_type_order('', Linear, 1)")
    assert module_call(mapping, path="fc2", module_type=nn.Linear, order=("", nn.Linear, 1)) == second
    first = module_call(mapping, path="fc1", module_type=nn.Linear, order=("", nn.Linear, 0))
    assert first == Resolution(A, "global")
    assert module_call(mapping, path="block.fc", module_type=nn.Linear, order=("block", nn.Linear, 1)) == \
        Resolution(A, "global")
    assert module_call(mapping, path="fc2", module_type=nn.Linear, order=None) == Resolution(A, "global")
    first_add = Resolution(C, "module_name_object_type_order('block', operator.add, 0)")
    assert function_call(mapping, function=operator.add, path="block", index=0) == first_add
    assert function_call(mapping, function=operator.add, path="block", index=1) == Resolution(A, "global")
    assert function_call(mapping, function=operator.mul, path="block", index=0) == Resolution(A, "global")


# ---- validate ----------------------------------------------------------------------------------------------

NAMES = {"", "features", "features.0", "features.0.conv", "head"}


def test_validate_accepts_existing_paths_and_the_root():
    mapping = QConfigMapping().set_module_name("features.0", None)
    mapping.set_module_name_object_type_order("", nn.Linear, 0, A).validate(NAMES)


def test_validate_names_every_missing_path_with_suggestions():
    with pytest.raises(ConfigError, match=r"'featurs\.0' \(did you mean 'features\.0'"):
        QConfigMapping().set_module_name("featurs.0", None).validate(NAMES)
    with pytest.raises(ConfigError, match=r"'body'") as caught:
        (QConfigMapping().set_module_name_object_type_order("body", nn.Conv2d, 0, A)
         .set_module_name("haed", None).validate(NAMES))
    assert "'haed' (did you mean 'head'?)" in str(caught.value)


def test_regex_matching_nothing_warns_and_a_matching_one_does_not():
    with pytest.warns(FxqWarning, match=r"'decoder\.\*' matches no module"):
        QConfigMapping().set_module_name_regex("decoder.*", None).validate(NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QConfigMapping().set_module_name_regex(r"features\.0\.", None).validate(NAMES)


# ---- argument checking -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.set_global("int8"), r"set_global needs a fxq\.QConfig, or None .* got a builtins\.str"),
    (lambda m: m.set_object_type(nn.Linear, {"activation": act_a}), "set_object_type needs a fxq.QConfig"),
    (lambda m: m.set_module_name("head", act_a), "set_module_name needs a fxq.QConfig"),
    (lambda m: m.set_object_type(3, A), "module class, a function or a method name"),
    (lambda m: m.set_object_type(nn.Linear(2, 2), A), r"Linear instance; pass its class"),
    (lambda m: m.set_module_name(("head",), A), "dotted module path"),
    (lambda m: m.set_module_name_regex(3, A), "regular expression string"),
    (lambda m: m.set_module_name_regex("(", A), "not a valid regular expression"),
    (lambda m: m.set_module_name_object_type_order("", nn.Linear, -1, A), "index that is an int >= 0"),
    (lambda m: m.set_module_name_object_type_order("", nn.Linear, True, A), "index that is an int >= 0"),
    (lambda m: m.set_module_name_object_type_order("", "x", 0, "qc"), "needs a fxq.QConfig"),
])
def test_setters_reject_wrong_arguments(call, message):
    with pytest.raises(ConfigError, match=message):
        call(QConfigMapping())


def test_qconfig_rejects_observer_instances_and_non_callables():
    from fxq.observers import MinMaxObserver

    with pytest.raises(ConfigError, match=r"not an observer instance .* use MinMaxObserver\.with_args\("):
        QConfig(activation=MinMaxObserver(), weight=None)
    with pytest.raises(ConfigError, match=r"QConfig\.weight .*use MinMaxObserver\.with_args"):
        QConfig(activation=act_a, weight=MinMaxObserver())
    with pytest.raises(ConfigError, match="observer factory"):
        QConfig(activation=None)
    assert QConfig(activation=MinMaxObserver).weight is None  # a class is a factory too


# ---- QConfig and QConfigMapping as values ------------------------------------------------------------------

def test_qconfig_is_an_immutable_value():
    assert QConfig(activation=act_a, weight=weight_w) == A and hash(QConfig(act_a, weight_w)) == hash(A)
    assert A != B and len({A, QConfig(act_a, weight_w), B}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        A.activation = act_b


def test_reprs_have_no_addresses():
    assert repr(A) == "QConfig(activation=act_a, weight=weight_w)"
    partial = QConfig(functools.partial(act_a, 1, k=2))
    assert repr(partial) == "QConfig(activation=partial(act_a, 1, k=2), weight=None)"
    mapping = (QConfigMapping().set_global(A).set_object_type(nn.Linear, None).set_object_type(F.relu, B)
               .set_module_name_object_type_order("", "add", 0, None))
    assert repr(mapping) == (
        "QConfigMapping(global=QConfig(activation=act_a, weight=weight_w), object_type={Linear: None, "
        "torch.nn.functional.relu: QConfig(activation=act_b, weight=weight_w)}, "
        "module_name_object_type_order={('', 'add', 0): None})")
    assert repr(QConfigMapping()) == "QConfigMapping()"
    assert "0x" not in repr(get_default_qconfig_mapping("x86"))


# ---- dict form ---------------------------------------------------------------------------------------------

def test_to_dict_is_torch_ao_dict_form_and_round_trips():
    mapping = (QConfigMapping().set_global(A).set_object_type(nn.Linear, B).set_module_name_regex("x.*", C)
               .set_module_name("head", None).set_module_name_object_type_order("", F.relu, 2, D))
    expected = {"": A, "object_type": [(nn.Linear, B)], "module_name_regex": [("x.*", C)],
                "module_name": [("head", None)], "module_name_object_type_order": [("", F.relu, 2, D)]}
    assert mapping.to_dict() == expected
    again = QConfigMapping.from_dict(expected)
    assert again.to_dict() == expected
    assert module_call(again, path="head", module_type=nn.Linear) == Resolution(None, "module_name('head')")


def test_dict_form_keeps_unset_global_apart_from_float_global():
    assert "" not in QConfigMapping().to_dict()
    unset = QConfigMapping.from_dict(QConfigMapping().to_dict())
    assert module_call(unset) == Resolution(None, "default(float)")
    float_global = QConfigMapping.from_dict({"": None})
    assert module_call(float_global) == Resolution(None, "global")


def test_from_dict_rejects_unknown_keys_and_bad_entries():
    with pytest.raises(ConfigError, match=r"unknown QConfigMapping dict keys 'module_names'"):
        QConfigMapping.from_dict({"module_names": [("head", None)]})
    with pytest.raises(ConfigError, match=r"'module_name_object_type_order' entry must be a tuple of 4"):
        QConfigMapping.from_dict({"module_name_object_type_order": [("", nn.Linear, None)]})
    with pytest.raises(ConfigError, match="set_object_type"):
        QConfigMapping.from_dict({"object_type": [(nn.Linear, "qconfig")]})


def test_dict_keys_match_torch_ao():
    tq = pytest.importorskip("torch.ao.quantization")
    theirs = tq.QConfigMapping().set_global(None).to_dict()
    assert set(QConfigMapping().set_global(None).to_dict()) == set(theirs)


# ---- precedence against torch.ao's own resolution helpers --------------------------------------------------

def _torch_ao_resolve(tq_mapping, utils, path, module_type, function, index):
    """torch.ao FX prepare's per-node steps (fx/qconfig_mapping_utils.py) for one module or function call."""
    if function is None:
        qconfig = utils._maybe_adjust_qconfig_for_module_type_or_name(tq_mapping, module_type, path,
                                                                       tq_mapping.global_qconfig)
        parent = path.rpartition(".")[0]
        return utils._maybe_adjust_qconfig_for_module_name_object_type_order(tq_mapping, parent, module_type,
                                                                              index, qconfig)
    qconfig = utils._get_object_type_qconfig(tq_mapping, function, tq_mapping.global_qconfig)
    qconfig = utils._maybe_adjust_qconfig_for_module_type_or_name(tq_mapping, module_type, path, qconfig)
    return utils._maybe_adjust_qconfig_for_module_name_object_type_order(tq_mapping, path, function, index,
                                                                          qconfig)


CASES = [  # (module path, module type, function, index)
    ("features.0.conv", nn.Conv2d, None, 0),
    ("features.0.conv", nn.Conv2d, None, 1),
    ("features.1.conv", nn.Conv2d, None, 0),
    ("features.0", Block, F.relu, 0),
    ("features.0", Block, F.relu, 1),
    ("features.0", Block, operator.add, 0),
    ("features.1", Block, operator.add, 0),
    ("head", nn.Linear, None, 0),
    ("head.proj", nn.Linear, None, 0),
    ("", None, operator.add, 0),
    ("", None, torch.sigmoid, 0),
    ("body", nn.Sequential, "relu", 0),
    ("blocks.0", Block, operator.add, 0),
    ("blocks.0", nn.Sequential, operator.add, 0),
]


def test_resolution_agrees_with_torch_ao():
    tq = pytest.importorskip("torch.ao.quantization")
    utils = pytest.importorskip("torch.ao.quantization.fx.qconfig_mapping_utils")
    if not hasattr(utils, "_maybe_adjust_qconfig_for_module_type_or_name"):
        pytest.skip("torch.ao's resolution helpers moved")
    rules = [
        ("set_global", (A,)),
        ("set_object_type", (nn.Conv2d, B)), ("set_object_type", (operator.add, C)),
        ("set_object_type", (Block, D)), ("set_object_type", ("relu", E)),
        ("set_object_type", (nn.Linear, None)),
        ("set_module_name_regex", (r"features\.1", E)), ("set_module_name_regex", (r"features", A)),
        ("set_module_name_regex", ("$", B)),  # matches the root path "" only
        ("set_module_name", ("head", C)), ("set_module_name", ("features.0.conv", None)),
        ("set_module_name_object_type_order", ("features.0", nn.Conv2d, 1, D)),
        ("set_module_name_object_type_order", ("features.0", F.relu, 1, E)),
    ]
    ours, theirs = QConfigMapping(), tq.QConfigMapping()
    for setter, args in rules:
        getattr(ours, setter)(*args)
        getattr(theirs, setter)(*args)  # torch.ao stores any object, so our sentinel QConfigs work there too
    for path, module_type, function, index in CASES:
        parent = path if function is not None else path.rpartition(".")[0]
        mine = ours.resolve(module_path=path, module_type=module_type, function=function,
                            order_key=(parent, function if function is not None else module_type, index))
        expected = _torch_ao_resolve(theirs, utils, path, module_type, function, index)
        assert mine.qconfig is expected, (path, module_type, function, index, mine.rule)


# ---- defaults ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "weight_range"), [
    ("x86", (-64, 63)), ("fbgemm", (-64, 63)), ("qnnpack", (-128, 127)), ("reference", (-128, 127)),
])
def test_default_qconfig_per_backend(backend, weight_range):
    """Full 8-bit activations everywhere; x86/fbgemm narrow the weights instead (see get_default_qconfig)."""
    from fxq.observers import HistogramObserver, PerChannelMinMaxObserver

    qconfig = get_default_qconfig(backend)
    act, weight = qconfig.activation(), qconfig.weight()
    assert type(act) is HistogramObserver and act.dtype == torch.quint8 and not act.symmetric
    assert not act.reduce_range and (act.quant_min, act.quant_max) == (0, 255)
    assert type(weight) is PerChannelMinMaxObserver and weight.ch_axis == 0
    assert weight.dtype == torch.qint8 and weight.symmetric
    assert (weight.quant_min, weight.quant_max) == weight_range
    assert "0x" not in repr(qconfig) and "HistogramObserver.with_args(" in repr(qconfig)


def test_fbgemm_is_an_alias_of_x86():
    assert get_default_qconfig("fbgemm") == get_default_qconfig("x86")
    assert get_default_qconfig("qnnpack") != get_default_qconfig("x86")


@pytest.mark.parametrize("make", [get_default_qconfig, get_default_qconfig_mapping,
                                  get_default_qat_qconfig_mapping])
def test_unknown_backend_lists_the_known_ones(make):
    with pytest.raises(ConfigError, match=r"unknown backend 'tpu'; available: (.*, )?qnnpack, (.*, )?reference, x86"):
        make("tpu")


def _resolve_op(mapping, op):
    if isinstance(op, type):
        return mapping.resolve(module_path="act", module_type=op, order_key=("", op, 0))
    return mapping.resolve(module_path="", module_type=None, function=op, order_key=("", op, 0))



@pytest.mark.parametrize("make", [get_default_qconfig_mapping, get_default_qat_qconfig_mapping])
def test_default_mapping_stores_embeddings_in_8_bit_rows_and_quantizes_the_rest(make):
    mapping = make("x86")
    for kind in (nn.Embedding, nn.EmbeddingBag):
        resolution = _resolve_op(mapping, kind)
        assert resolution.rule == f"object_type({kind.__name__})"
        assert resolution.qconfig.is_weight_only and resolution.qconfig.weight_only_bits == 8
        assert not resolution.qconfig.is_dynamic
    linear = _resolve_op(mapping, nn.Linear)
    assert linear.rule == "global" and linear.qconfig == mapping.global_qconfig is not None


@pytest.mark.parametrize("backend", ["x86", "qnnpack", "reference"])
def test_default_qat_mapping_uses_moving_average_activations(backend):
    """Full 8-bit activations, as the static default (x86 narrows the shared weight observer instead)."""
    from fxq.observers import MovingAverageMinMaxObserver

    static = get_default_qconfig_mapping(backend).global_qconfig
    qat = get_default_qat_qconfig_mapping(backend).global_qconfig
    act = qat.activation()
    assert type(act) is MovingAverageMinMaxObserver and act.dtype == torch.quint8 and not act.symmetric
    assert not act.reduce_range and (act.quant_min, act.quant_max) == (0, 255)
    assert qat.weight == static.weight


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_default_settings_match_torch_ao(backend):
    tq = pytest.importorskip("torch.ao.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's reduce_range deprecation notice
        their_mapping = tq.get_default_qconfig_mapping(backend)
        theirs = their_mapping.global_qconfig
        their_act, their_weight = theirs.activation(), theirs.weight()
        their_sigmoid = their_mapping.object_type_qconfigs[torch.sigmoid].activation()
        their_tanh = their_mapping.object_type_qconfigs[torch.tanh].activation()
    ours = get_default_qconfig_mapping(backend)
    act, weight = ours.global_qconfig.activation(), ours.global_qconfig.weight()
    assert type(act).__name__ == type(their_act).__name__ == "HistogramObserver"
    assert their_act.qscheme == torch.per_tensor_affine and not act.symmetric
    assert act.dtype == their_act.dtype
    if backend == "x86":  # torch.ao narrows activations to 7 bits; fxq narrows weights (get_default_qconfig)
        assert their_act.reduce_range and not act.reduce_range and (act.quant_min, act.quant_max) == (0, 255)
        assert (weight.quant_min, weight.quant_max) == (-64, 63)
    else:
        assert (act.quant_min, act.quant_max) == (their_act.quant_min, their_act.quant_max)
        assert (weight.quant_min, weight.quant_max) == (their_weight.quant_min, their_weight.quant_max)
    assert weight.dtype == their_weight.dtype == torch.qint8
    # Symmetric weights on both; per channel on both for x86. On qnnpack torch.ao uses one scale per tensor
    # and fxq keeps per channel (a documented choice in get_default_qconfig).
    expected_qscheme = torch.per_channel_symmetric if backend == "x86" else torch.per_tensor_symmetric
    assert their_weight.qscheme == expected_qscheme and weight.symmetric and weight.per_channel
    # torch.ao fixes sigmoid's and tanh's qparams to their whole bound; fxq observes them (a deliberate change,
    # see test_default_mapping_observes_bounded_ops_like_any_op), and takes torch.ao's fixed form when given it.
    assert float(their_sigmoid.scale) == 1 / 256 and float(their_tanh.scale) == 2 / 256
    for op in (torch.sigmoid, torch.tanh):
        assert _resolve_op(ours, op).rule == "global"


@pytest.mark.parametrize("backend", ["x86", "qnnpack", "reference"])
def test_default_mapping_observes_bounded_ops_like_any_op(backend):
    """Softmax outputs over N values sit near 1/N, a tanh of small values near 0: a fixed range spanning the
    op's bound would leave them a step or two, so their range is observed (and never wider than the bound)."""
    from fxq.observers import FixedQParamsObserver

    mapping = get_default_qconfig_mapping(backend)
    for op in (nn.Softmax, F.softmax, torch.softmax, "softmax", nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid",
               nn.Hardsigmoid, F.hardsigmoid, nn.Tanh, torch.tanh, F.tanh, "tanh"):
        resolution = _resolve_op(mapping, op)
        assert resolution.rule == "global", op
        assert type(resolution.qconfig.activation()) is not FixedQParamsObserver, op


def test_prepare_without_a_mapping_uses_the_backends_default():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    example = (torch.randn(2, 4),)
    for backend in ("x86", "qnnpack"):
        implicit = fxq.prepare(model, None, example, backend=backend)
        explicit = fxq.prepare(model, fxq.get_default_qconfig_mapping(backend), example, backend=backend)
        assert str(implicit.code) == str(explicit.code)
        assert [repr(m) for m in implicit.modules()] == [repr(m) for m in explicit.modules()]
