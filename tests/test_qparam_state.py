"""A converted model's state_dict holds every qparam: loaded into a model prepared and converted the same way but
calibrated on other data, it reproduces the saved model's outputs exactly; one from another model is refused."""

import pytest
import torch

import fxq
from fxq.annotation import info
from tests.capture.test_capture import _batches, _bert
from tests.models import calibration_batches, eval_batches, example_inputs, make_model


def _pair(name: str, backend: str):
    """Two quantizations of one model, calibrated on different data."""
    model = make_model(name)
    first = fxq.quantize(model, example_inputs(name), calibration_batches(name, n=3), backend=backend)
    other = [tuple(2.5 * t + 0.5 for t in batch) for batch in calibration_batches(name, n=3, seed=7)]
    second = fxq.quantize(model, example_inputs(name), other, backend=backend)
    return first, second


@pytest.mark.parametrize("backend", ["x86", "qnnpack", "reference"])
@pytest.mark.parametrize("name", ["mlp", "resnet", "mobilenet", "transformer"])
def test_state_dict_reproduces_the_saved_model_exactly(name, backend):
    saved, fresh = _pair(name, backend)
    x = eval_batches(name, n=1)[0]
    with torch.no_grad():
        expected = saved(*x)
        assert not torch.equal(fresh(*x), expected)  # the calibrations differ, so the qparams do
        fresh.load_state_dict(saved.state_dict())
        assert torch.equal(fresh(*x), expected)


def test_every_activation_qparam_is_a_state_dict_entry():
    quantized, _ = _pair("resnet", "x86")
    state = quantized.state_dict()
    graph_pairs = [k for k in state if k.startswith("fxq_qparams.")]
    module_pairs = [k for k in state if k.endswith((".scale", ".zero_point")) and not k.startswith("fxq_qparams.")]
    assert graph_pairs and module_pairs
    assert state["fxq_qparams.quantize_per_tensor.scale"].dtype == torch.float64  # the literal's exact value
    node = next(n for n in quantized.graph.nodes if n.name == "quantize_per_tensor")
    assert float(state["fxq_qparams.quantize_per_tensor.scale"]) == node.args[1]


def test_loading_updates_the_records_the_dump_reads():
    saved, fresh = _pair("mlp", "x86")
    fresh.load_state_dict(saved.state_dict())
    node = next(n for n in fresh.graph.nodes if n.name == "quantize_per_tensor")
    assert info(node).qparams["output"]["scale"] == node.args[1] == float(saved.state_dict()[
        "fxq_qparams.quantize_per_tensor.scale"])


def test_export_captured_model_state_dict_round_trips():
    model = _bert(layers=1)
    saved = fxq.quantize(model, _batches(1, 0, 16)[0], _batches(1, 1, 16), backend="x86", capture="export")
    fresh = fxq.quantize(model, _batches(1, 0, 16)[0], _batches(1, 5, 16), backend="x86", capture="export")
    ids, mask = _batches(1, 2, 16)[0]
    with torch.no_grad():
        expected = saved(ids, mask).last_hidden_state
        assert not torch.equal(fresh(ids, mask).last_hidden_state, expected)
        fresh.load_state_dict(saved.state_dict())
        assert torch.equal(fresh(ids, mask).last_hidden_state, expected)


def test_dynamic_model_state_dict_round_trips():
    model = make_model("transformer")
    saved, fresh = fxq.quantize_dynamic(model), fxq.quantize_dynamic(make_model("transformer", seed=3))
    x = eval_batches("transformer", n=1)[0]
    with torch.no_grad():
        fresh.load_state_dict(saved.state_dict())
        assert torch.equal(fresh(*x), saved(*x))


def test_a_state_dict_of_another_model_is_refused_naming_the_key():
    quantized, _ = _pair("mlp", "x86")
    resnet, _ = _pair("resnet", "x86")
    with pytest.raises(fxq.LoadError, match=r"fxq_qparams\.\w+\.scale") as raised:
        resnet.load_state_dict(quantized.state_dict())
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_missing_qparam_is_refused_and_nothing_silently_kept():
    saved, fresh = _pair("mlp", "x86")
    state = saved.state_dict()
    key = next(k for k in state if k.startswith("fxq_qparams.") and k.endswith(".zero_point"))
    del state[key]
    with pytest.raises(fxq.LoadError, match=key.replace(".", r"\.")):
        fresh.load_state_dict(state)


def test_a_weight_of_another_shape_is_refused():
    saved, fresh = _pair("mlp", "x86")
    state = saved.state_dict()
    key = next(k for k in state if k.endswith("weight_int8"))
    state[key] = state[key][:, :-1].clone()
    with pytest.raises(fxq.LoadError, match=f"size mismatch for {key}"):
        fresh.load_state_dict(state)
