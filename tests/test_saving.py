"""fxq.save / fxq.load: every kind of model fxq makes comes back computing exactly what it did, with its records,
from a file that loading reads as data (weights-only) and never runs code from."""

import pytest
import torch

import fxq
from fxq.annotation import info
from tests.capture.test_capture import _batches, _bert
from tests.models import calibration_batches, eval_batches, example_inputs, make_model


def _round_trip(model, tmp_path, **load_options):
    path = tmp_path / "model.fxq.pt"
    fxq.save(model, path)
    return fxq.load(path, **load_options)


def _records(gm):
    return [(n.name, info(n).concept, info(n).lowered_to, info(n).qconfig_rule, str(info(n).qparams))
            for n in gm.graph.nodes]


@pytest.mark.parametrize("backend", ["x86", "qnnpack", "reference"])
@pytest.mark.parametrize("name", ["resnet", "transformer", "mixed"])
def test_converted_models_come_back_exact_with_their_records(name, backend, tmp_path):
    quantized = fxq.quantize(make_model(name), example_inputs(name), calibration_batches(name, n=2),
                             backend=backend)
    loaded = _round_trip(quantized, tmp_path)
    x = eval_batches(name, n=1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(*x), quantized(*x))
    assert _records(loaded) == _records(quantized)  # node names too: nothing is re-traced
    assert str(fxq.report_of(loaded)) == str(fxq.report_of(quantized))
    assert [r.name for r in fxq.pass_records(loaded)] == [r.name for r in fxq.pass_records(quantized)]
    assert loaded.code == quantized.code


def test_a_prepared_model_comes_back_calibrated_and_converts_to_the_same_model(tmp_path):
    """MobileNetV2ish fuses residual add+relu into fxq.nn.functional.add_relu, which re-tracing used to break."""
    prepared = fxq.prepare(make_model("mobilenet"), fxq.get_default_qconfig_mapping("x86"),
                           example_inputs("mobilenet"), backend="x86")
    for batch in calibration_batches("mobilenet", n=2):
        prepared(*batch)
    loaded = _round_trip(prepared, tmp_path)
    x = eval_batches("mobilenet", n=1)[0]
    with torch.no_grad():
        assert torch.equal(fxq.convert(loaded)(*x), fxq.convert(prepared)(*x))
        more = calibration_batches("mobilenet", n=1, seed=9)[0]
        prepared(*more), loaded(*more)  # calibration goes on where it stopped
        assert torch.equal(fxq.convert(loaded)(*x), fxq.convert(prepared)(*x))


def test_an_export_captured_hf_model_comes_back_exact(tmp_path):
    quantized = fxq.quantize(_bert(layers=1), _batches(1, 0, 16)[0], _batches(1, 1, 16), backend="x86",
                             capture="export")
    loaded = _round_trip(quantized, tmp_path)
    ids, mask = _batches(1, 2, 16)[0]
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).last_hidden_state, quantized(ids, mask).last_hidden_state)
    assert loaded.meta["fxq_capture"]["how"] == "export"
    assert "input guards" in loaded.meta["fxq_saved_without"][0]
    assert _records(loaded) == [r for r in _records(quantized) if r[0] != "_guards_fn"]


@pytest.mark.parametrize("spec", [None, {torch.nn.Linear: fxq.WeightOnly(4, 8)}], ids=["dynamic", "weight-only"])
def test_dynamic_and_weight_only_models_come_back_exact(spec, tmp_path):
    quantized = fxq.quantize_dynamic(make_model("transformer"), spec)
    loaded = _round_trip(quantized, tmp_path)
    x = eval_batches("transformer", n=1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(*x), quantized(*x))
    assert type(loaded) is type(quantized) and str(fxq.report_of(loaded)) == str(fxq.report_of(quantized))


def test_a_dynamic_hf_model_takes_its_config_from_the_float_model(tmp_path):
    float_model = _bert(layers=1)
    quantized = fxq.quantize_dynamic(float_model)
    path = tmp_path / "bert.fxq.pt"
    fxq.save(quantized, path)
    with pytest.raises(fxq.LoadError, match=r"attribute 'config' \(a BertConfig\).*fxq.load\(path, model="):
        fxq.load(path)
    loaded = fxq.load(path, model=_bert(layers=1))
    ids, mask = _batches(1, 2, 16)[0]
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).last_hidden_state, quantized(ids, mask).last_hidden_state)


def test_tied_weights_stay_tied(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10)).eval()
    model[1].weight = model[0].weight
    loaded = _round_trip(fxq.quantize_dynamic(model, {torch.nn.Embedding: None}), tmp_path)
    assert loaded[1].weight is loaded[0].weight


def test_the_file_is_data_that_weights_only_loading_reads(tmp_path):
    path = tmp_path / "m.pt"
    fxq.save(fxq.quantize(make_model("mlp"), example_inputs("mlp"), calibration_batches("mlp", n=1)), path)
    payload = torch.load(path, weights_only=True)  # raises if the file held any pickled object
    assert payload["format"] == "fxq-model" and payload["version"] == 2


def test_a_module_class_from_a_package_not_imported_is_named_with_the_fix(tmp_path):
    path = tmp_path / "m.pt"
    fxq.save(fxq.quantize_dynamic(make_model("mlp")), path)
    payload = torch.load(path, weights_only=True)
    payload["model"]["class"] = "someone_elses_package.models:Net"
    torch.save(payload, path)
    with pytest.raises(fxq.LoadError, match="import someone_elses_package.models before fxq.load"):
        fxq.load(path)


def test_a_record_naming_a_dangerous_function_stays_a_name(tmp_path):
    """An observer class in a qconfig record is called at convert: a file cannot make it os.system."""
    from fxq.plain_data import UnresolvedName, reference_named

    assert isinstance(reference_named("os:system"), UnresolvedName)
    assert isinstance(reference_named("subprocess:Popen"), UnresolvedName)
    assert reference_named("torch.nn.modules.linear:Linear") is torch.nn.Linear


def test_save_refuses_what_is_not_data_and_names_it(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model[0].register_forward_hook(lambda *_: None)
    with pytest.raises(fxq.ConfigError, match=r"module '0' \(Linear\) has _forward_hooks registered"):
        fxq.save(fxq.quantize_dynamic(model, {torch.nn.Linear: None}), tmp_path / "x.pt")
    with pytest.raises(fxq.ConfigError, match="an nn.Module"):
        fxq.save("not a model", tmp_path / "x.pt")
