"""fxq.prepare_qat end to end: a trainable copy (the user's model untouched, before and after training), which
pickles and deep-copies, whose switches work, and which converts to the same kernels as PTQ, computing what the
fake-quantized model computed."""

import copy
import pickle

import pytest
import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.metrics import sqnr_db
from fxq.nn.quantized import QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput
from fxq.qat import (
    FakeQuantize,
    WeightFakeQuantize,
    enable_fake_quant,
    freeze_bn_stats,
    freeze_observers,
    reestimate_bn_stats,
)
from fxq.statistics import ChannelStatistics
from tests.models import calibration_batches, example_inputs, make_model


def _trained(name="resnet", steps=4, **options):
    model = make_model(name)
    prepared = fxq.prepare_qat(model, None, example_inputs(name), **options)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3)
    for batch in calibration_batches(name, n=steps):
        optimizer.zero_grad()
        prepared(*batch).square().mean().backward()
        optimizer.step()
    return model, prepared


def test_the_users_model_is_unchanged_by_prepare_and_by_training_the_copy():
    model = make_model("resnet")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    prepared = fxq.prepare_qat(model, None, example_inputs("resnet"))
    assert not {id(p) for p in prepared.parameters()} & {id(p) for p in model.parameters()}
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    for batch in calibration_batches("resnet", n=3):
        optimizer.zero_grad()
        prepared(*batch).square().mean().backward()
        optimizer.step()
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert model.training == make_model("resnet").training


def test_the_prepared_model_trains_pickles_and_deep_copies():
    _, prepared = _trained()
    assert prepared.training
    x = calibration_batches("resnet", n=1, seed=9)[0]
    prepared.eval()
    with torch.no_grad():
        expected = prepared(*x)
        for clone in (copy.deepcopy(prepared), pickle.loads(pickle.dumps(prepared))):
            clone.eval()
            assert torch.equal(clone(*x), expected)


def test_convert_gives_ptq_kernels_computing_what_the_fake_quantized_model_computed():
    _, prepared = _trained()
    reestimate_bn_stats(prepared)  # what convert would do: now the prepared model has the same statistics
    prepared.eval()
    converted = fxq.convert(prepared)
    assert "fxq_batch_norm" not in converted.meta  # nothing left for convert to measure
    kinds = {type(m) for m in converted.modules()}
    assert QuantizedConv in kinds and (QuantizedLinear in kinds or QuantizedLinearFloatOutput in kinds)
    assert not any(isinstance(m, (FakeQuantize, WeightFakeQuantize)) for m in converted.modules())
    x = calibration_batches("resnet", n=1, seed=9)[0]
    with torch.no_grad():
        assert sqnr_db(prepared(*x), converted(*x)) >= 35


def test_weights_get_straight_through_gradients():
    model = make_model("mlp")
    prepared = fxq.prepare_qat(model, None, example_inputs("mlp"))
    prepared(*calibration_batches("mlp", n=1)[0]).sum().backward()
    grads = [p.grad for name, p in prepared.named_parameters() if name.endswith("weight")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_frozen_observers_keep_their_range_and_fake_quant_can_be_switched_off():
    model = make_model("mlp")
    prepared = fxq.prepare_qat(model, None, example_inputs("mlp"))
    x = calibration_batches("mlp", n=1)[0]
    prepared(*x)
    freeze_observers(prepared)
    scales = {name: m.scale.clone() for name, m in prepared.named_modules() if isinstance(m, FakeQuantize)}
    prepared(*(t * 10 for t in x))
    assert all(torch.equal(m.scale, scales[name]) for name, m in prepared.named_modules()
               if isinstance(m, FakeQuantize))
    enable_fake_quant(prepared, False)
    prepared.eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(prepared(*x), model(*x), atol=1e-5)  # no rounding: the float model


def test_bit_widths_below_8_come_from_the_qconfig_range():
    from fxq.observers import MovingAverageMinMaxObserver, PerChannelMinMaxObserver

    four_bit = fxq.QConfig(MovingAverageMinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=15),
                           PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=-8,
                                                              quant_max=7))
    prepared = fxq.prepare_qat(make_model("mlp"), fxq.QConfigMapping().set_global(four_bit), example_inputs("mlp"))
    x = calibration_batches("mlp", n=1)[0]
    prepared(*x)
    layer = prepared.fc1[0]  # fused with its ReLU
    rounded = layer.weight_fake_quant(layer.weight)
    assert max(len(row.unique()) for row in rounded) <= 16
    fake = next(m for m in prepared.modules() if isinstance(m, FakeQuantize))
    assert len(fake(x[0]).unique()) <= 16


def test_batch_norm_statistics_freeze_and_calibration_corrections_are_not_trained_over():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    prepared = fxq.prepare_qat(model, None, (torch.randn(2, 3, 8, 8),))
    assert not any(isinstance(m, ChannelStatistics) for m in prepared.modules())  # no bias correction after QAT
    assert prepared.meta["fxq_recipe"]["recipe"].convert_passes == ()


def test_an_exported_graph_trains_its_linear_calls_too():
    model = make_model("mlp")
    prepared = fxq.prepare_qat(model, None, example_inputs("mlp"), capture="export")
    assert sum(isinstance(m, WeightFakeQuantize) for m in prepared.modules()) == 3
    prepared(*calibration_batches("mlp", n=1)[0])
    prepared.eval()
    converted = fxq.convert(prepared)
    assert not any(isinstance(m, WeightFakeQuantize) for m in converted.modules())
    x = calibration_batches("mlp", n=1, seed=4)[0]
    with torch.no_grad():
        assert sqnr_db(prepared(*x), converted(*x)) >= 35


@pytest.mark.parametrize("bad", [None, "model"])
def test_prepare_qat_refuses_what_is_not_a_module(bad):
    with pytest.raises(fxq.ConfigError, match="takes an nn.Module"):
        fxq.prepare_qat(bad, None, (torch.randn(1, 4),))


def _conv_bn_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_batch_norms_train_with_their_conv_and_fold_at_convert():
    model = _conv_bn_model()
    x = torch.randn(8, 3, 10, 10)
    prepared = fxq.prepare_qat(model, None, (x,))
    unit = prepared.get_submodule("0")
    assert type(unit).__name__ == "QATLayerBn" and isinstance(unit.bn, nn.BatchNorm2d)
    before = unit.bn.running_mean.clone()
    prepared(x * 2 + 1)  # training mode: batch statistics, running ones updated
    assert not torch.equal(unit.bn.running_mean, before)
    freeze_bn_stats(prepared)
    prepared.train()  # every training loop does this each epoch: the freeze must outlast it
    frozen = unit.bn.running_mean.clone()
    prepared(x)
    assert torch.equal(unit.bn.running_mean, frozen)
    prepared.eval()
    with torch.no_grad():  # in eval mode the unit is exactly the folded conv on the rounded folded weight
        folded = unit.folded()
        conv = folded[0]
        rounded = unit.weight_fake_quant(conv.weight)
        expected = torch.relu(torch.nn.functional.conv2d(x, rounded, conv.bias))
        assert torch.allclose(unit(x), expected, atol=1e-5)
        converted = fxq.convert(prepared)
        assert sqnr_db(prepared(x), converted(x)) >= 35
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())


def test_a_linears_batch_norm_trains_with_it_and_folds_at_convert():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(32, 6)
    prepared = fxq.prepare_qat(model, None, (x,))
    unit = prepared.get_submodule("0")
    assert type(unit).__name__ == "QATLayerBn" and isinstance(unit.layer, nn.Linear)
    before = unit.bn.running_mean.clone()
    prepared(x * 3 - 1)
    assert not torch.equal(unit.bn.running_mean, before)
    reestimate_bn_stats(prepared)
    prepared.eval()
    with torch.no_grad():
        converted = fxq.convert(prepared)
        assert sqnr_db(prepared(x), converted(x)) >= 35
    assert not any(isinstance(m, nn.BatchNorm1d) for m in converted.modules())
    assert isinstance(converted.get_submodule("0"), QuantizedLinear)


def test_a_lone_batch_norm_stays_frozen_through_train():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4)).eval()
    prepared = fxq.prepare_qat(model, None, (torch.randn(2, 3, 8, 8),))
    norm = next(m for m in prepared.modules() if isinstance(m, nn.BatchNorm2d))
    freeze_bn_stats(prepared).train()
    frozen = norm.running_mean.clone()
    x = torch.randn(4, 3, 8, 8) * 2 + 1
    out = prepared(x)
    assert torch.equal(norm.running_mean, frozen)
    prepared.eval()
    assert torch.equal(out, prepared(x))  # training mode now normalises as eval mode does
    freeze_bn_stats(prepared, frozen=False).train()
    prepared(x)
    assert not torch.equal(norm.running_mean, frozen)


def test_a_training_model_saves_loads_converts_and_shows_its_ranges(tmp_path):
    _, prepared = _trained(steps=2)
    reestimate_bn_stats(prepared)  # the recorded batches are not saved: measure with them first
    fxq.save(prepared, tmp_path / "qat.fxq")
    loaded = fxq.load(tmp_path / "qat.fxq")
    x = calibration_batches("resnet", n=1, seed=5)[0]
    prepared.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(*x), prepared(*x))
        assert torch.equal(fxq.convert(loaded)(*x), fxq.convert(prepared)(*x))
    rows = {row.name: row for row in fxq.inspect(prepared)}
    fake = prepared.get_submodule(_output_observer(prepared, "conv1"))
    assert rows["conv1"].scale == pytest.approx(float(fake.scale))  # the dump shows what training rounds with


def _output_observer(prepared, node_name):
    node = next(n for n in prepared.graph.nodes if n.name == node_name)
    return info(node).observers["output"]


@pytest.mark.parametrize("learned", ["scale", "zero_point"])
def test_learned_qparams_train_and_convert_uses_them(learned):
    from fxq.observers import MovingAverageMinMaxObserver

    fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver.with_args(dtype=torch.quint8),
                                        learn_zero_point=learned == "zero_point")
    mapping = fxq.QConfigMapping().set_global(fxq.QConfig(fake_quant, fxq.get_default_qconfig("x86").weight))
    prepared = fxq.prepare_qat(make_model("mlp"), mapping, example_inputs("mlp"))
    fakes = [m for m in prepared.modules() if isinstance(m, FakeQuantize)]
    assert fakes and all(isinstance(getattr(m, learned), nn.Parameter) for m in fakes)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=1e-3)
    first = None
    for batch in calibration_batches("mlp", n=6):
        optimizer.zero_grad()
        (prepared(*batch) - 3).square().mean().backward()
        first = first if first is not None else [float(getattr(m, learned)) for m in fakes]
        optimizer.step()
    assert [float(getattr(m, learned)) for m in fakes] != first  # they moved with training
    prepared.eval()
    converted = fxq.convert(prepared)
    x = calibration_batches("mlp", n=1, seed=3)[0]
    with torch.no_grad():
        assert sqnr_db(prepared(*x), converted(*x)) >= 35


def test_a_symmetric_scheme_does_not_learn_its_zero_point():
    from fxq.observers import MinMaxObserver

    symmetric = FakeQuantize(MinMaxObserver(dtype=torch.qint8, symmetric=True), learn_zero_point=True)
    assert not symmetric.learn_zero_point and not isinstance(symmetric.zero_point, nn.Parameter)


def test_merging_fake_quantizers_rounds_with_the_merged_range():
    from fxq.observers import MinMaxObserver

    narrow, wide = FakeQuantize(MinMaxObserver(), learn_scale=False), FakeQuantize(MinMaxObserver(), learn_scale=False)
    narrow(torch.linspace(-1, 1, 50))
    wide(torch.linspace(-10, 10, 50))
    narrow.merge(wide)
    expected = MinMaxObserver()
    expected(torch.linspace(-10, 10, 50))
    assert torch.allclose(narrow.calculate_qparams()[0], expected.calculate_qparams()[0])
