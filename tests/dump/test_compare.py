"""fxq.compare: matched by annotations, and the deliberately damaged layer comes first."""

import math

import pytest
import torch

import fxq
from fxq.observers import MinMaxObserver, PerChannelMinMaxObserver
from fxq.qconfig import QConfig
from tests.models import calibration_batches, eval_batches, example_inputs, make_model

FOUR_BIT = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=15),
                   weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=-8,
                                                             quant_max=7))


def _quantize(name, mapping, backend="x86"):
    model = make_model(name)
    return model, fxq.quantize(model, example_inputs(name), calibration_batches(name), backend=backend,
                               qconfig_mapping=mapping)


@pytest.mark.parametrize("name, layer", [("mlp", "fc2"), ("resnet", "layer1.conv2"), ("transformer", "v"),
                                         ("mobilenet", "features.3.block.3")])
@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_a_layer_forced_to_4_bits_is_ranked_first(name, layer, backend):
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name(layer, FOUR_BIT)
    model, quantized = _quantize(name, mapping, backend)
    comparison = fxq.compare(model, quantized, eval_batches(name))
    worst = comparison.worst()
    assert worst.module_path == layer, str(comparison)
    assert worst.own_sqnr_db < comparison.layers[1].own_sqnr_db - 3


def test_a_layer_given_a_bad_range_is_ranked_first():
    """Calibrated on data 100x larger than what it sees later: its steps are far too coarse."""
    model = make_model("mlp")
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), example_inputs("mlp"), backend="x86")
    with torch.no_grad():
        for (batch,) in calibration_batches("mlp"):
            prepared(batch)
        observer = prepared.get_submodule(fxq.info(next(n for n in prepared.graph.nodes
                                                         if n.name == "fc2")).observers["output"])
        observer(torch.tensor([-200.0, 200.0]))  # one outlier batch reached fc2's output
    comparison = fxq.compare(model, fxq.convert(prepared), eval_batches("mlp"))
    assert comparison.worst().node == "fc2", str(comparison)


def test_metrics_are_consistent():
    model, quantized = _quantize("resnet", fxq.get_default_qconfig_mapping("x86"))
    comparison = fxq.compare(model, quantized, eval_batches("resnet"))
    assert len(comparison.layers) >= 10
    for layer in comparison.layers:
        assert layer.sqnr_db <= layer.own_sqnr_db or math.isinf(layer.own_sqnr_db)
        assert 0.9 < layer.cosine <= 1.0 + 1e-9 and layer.max_abs_error >= 0
        assert layer.sqnr_db > 15
    owns = [layer.own_sqnr_db for layer in comparison.layers]
    assert owns == sorted(owns)
    assert {"conv1", "fc"} <= {layer.node for layer in comparison.layers}


def test_compare_refuses_models_not_from_fxq():
    model = make_model("mlp")
    with pytest.raises(fxq.ConfigError, match="fxq.convert"):
        fxq.compare(model, torch.fx.symbolic_trace(model), eval_batches("mlp"))
    _, quantized = _quantize("mlp", fxq.get_default_qconfig_mapping("x86"))
    with pytest.raises(fxq.ConfigError, match="no data"):
        fxq.compare(model, quantized, [])


def test_observer_summary_lists_every_observer():
    model = make_model("mlp")
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), example_inputs("mlp"), backend="x86")
    before = fxq.observer_summary(prepared)
    assert [row.node for row in before] == ["x", "fc1", "fc2"]  # fc3's output is the model's: float
    assert all(row.scale is None and row.observed_min is None for row in before)
    for (batch,) in calibration_batches("mlp"):
        prepared(batch)
    rows = {row.node: row for row in fxq.observer_summary(prepared)}
    assert rows["fc1"].kind == "HistogramObserver" and rows["fc1"].dtype == "quint8"
    assert rows["fc1"].observed_min == 0.0 and rows["fc1"].scale > 0 and rows["fc1"].zero_point == 0
    assert rows["x"].observed_min < 0 < rows["x"].observed_max
    with pytest.raises(fxq.ConfigError, match="prepared model"):
        fxq.observer_summary(fxq.convert(prepared))


def test_a_crushed_channel_shows_in_the_worst_channel_sqnr():
    """docs/inspect.md's session: one huge channel in mix's output crushes the others."""
    from fxq.tools.examples import outlier_net

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 32, generator=g),) for _ in range(8)]
    model = outlier_net()
    layers = {layer.node: layer for layer in fxq.compare(model, fxq.quantize(model, batches[0], batches),
                                                         batches).layers}
    assert layers["mix"].sqnr_db > 20 and layers["mix"].worst_channel_sqnr_db < 10
    assert layers["head"].sqnr_db < 15
    with torch.no_grad():  # the documented fix: move the channel's scale from mix to head
        model.mix.weight[7] /= 100
        model.mix.bias[7] /= 100
        model.head.weight[:, 7] *= 100
    fixed = {layer.node: layer for layer in fxq.compare(model, fxq.quantize(model, batches[0], batches),
                                                        batches).layers}
    assert fixed["head"].sqnr_db > 25 and fixed["mix"].worst_channel_sqnr_db > 20
