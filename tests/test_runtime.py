"""The runtime a converted model's calls run on (fxq.runtime): TorchScript where it compiles and computes exactly
what the graph does, the graph otherwise, with the reason recorded; rebuilt after copies and loads."""

import copy

import pytest
import torch

import fxq
from fxq import runtime
from fxq.runtime import RUNTIME_KEY
from tests.capture.test_capture import _batches, _bert
from tests.models import calibration_batches, eval_batches, example_inputs, make_model


def _quantized(name="mlp", backend="x86", runtime_name="torchscript", seed=0, calibration_seed=1):
    calibration = calibration_batches(name, n=2, seed=calibration_seed)
    return fxq.quantize(make_model(name, seed), example_inputs(name), calibration, backend=backend, runtime=runtime_name)


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("name", ["resnet", "mobilenet", "transformer", "mixed"])
def test_torchscript_runtime_computes_what_the_graph_does(name, backend):
    fast, graph = _quantized(name, backend), _quantized(name, backend, "graph")
    assert fast.meta[RUNTIME_KEY]["name"] == "torchscript", fast.meta[RUNTIME_KEY]["why"]
    assert runtime.runner(fast) is not None and runtime.runner(graph) is None
    assert graph.meta[RUNTIME_KEY] == {"name": "graph", "why": "asked for"}
    with torch.no_grad():
        for batch in eval_batches(name, n=2):
            assert torch.equal(fast(*batch), graph(*batch))


def test_auto_records_its_choice_with_both_timings_and_the_report_shows_it():
    quantized = _quantized(runtime_name="auto")
    record = quantized.meta[RUNTIME_KEY]
    assert record["name"] in ("graph", "torchscript") and "bit-exact" in record["why"]
    assert record["graph_ms"] > 0 and record["torchscript_ms"] > 0
    assert f"runtime {record['name']}: " in str(fxq.report_of(quantized))


def test_reference_backend_falls_back_to_the_graph_and_says_where_torchscript_fails():
    quantized = _quantized(backend="reference", runtime_name="auto")
    record = quantized.meta[RUNTIME_KEY]
    assert record["name"] == "graph" and runtime.runner(quantized) is None
    assert "TorchScript cannot compile this model" in record["why"] and "reference.py" in record["why"]


def test_a_copy_that_computes_other_values_is_not_installed(monkeypatch):
    build = runtime.frozen_script
    monkeypatch.setattr(runtime, "frozen_script", lambda gm: _PlusOne(build(gm)))
    quantized = _quantized(runtime_name="auto")
    assert quantized.meta[RUNTIME_KEY]["name"] == "graph"
    assert "computes other values than the graph" in quantized.meta[RUNTIME_KEY]["why"]


class _PlusOne(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 1


@pytest.mark.parametrize("name", ["auto", "fast", None])
def test_an_unknown_runtime_is_a_config_error_listing_the_choices(name):
    with pytest.raises(fxq.ConfigError, match=r"\['auto', 'graph', 'torchscript'\]"):
        fxq.quantize(make_model("mlp"), example_inputs("mlp"), [], runtime=name.upper() if name else name)
    prepared = fxq.prepare(make_model("mlp"), fxq.get_default_qconfig_mapping("x86"), example_inputs("mlp"))
    with pytest.raises(fxq.ConfigError, match="is not a runtime"):
        fxq.convert(prepared, runtime="jit")


def test_a_deep_copy_keeps_the_choice_and_builds_its_own_copy():
    quantized = _quantized()
    x = eval_batches("mlp", n=1)[0]
    copied = copy.deepcopy(quantized)
    assert copied.meta[RUNTIME_KEY] == quantized.meta[RUNTIME_KEY]
    with torch.no_grad():
        assert torch.equal(copied(*x), quantized(*x))
    assert runtime.runner(copied) is not None and runtime.runner(copied) is not runtime.runner(quantized)


def test_fxq_load_restores_the_choice_and_builds_the_runtime_on_the_first_call(tmp_path):
    quantized = _quantized("mobilenet")
    fxq.save(quantized, tmp_path / "model.fxq")
    loaded = fxq.load(tmp_path / "model.fxq")
    assert loaded.meta[RUNTIME_KEY] == quantized.meta[RUNTIME_KEY]
    x = eval_batches("mobilenet", n=1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(*x), quantized(*x))
    assert runtime.runner(loaded) is not None


def test_load_state_dict_rebuilds_the_torchscript_copy_with_the_loaded_weights_and_qparams():
    target = _quantized(seed=0)
    source = _quantized(seed=3, calibration_seed=5)  # other weights and other activation ranges
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        before, expected = target(*x), source(*x)
        assert not torch.equal(before, expected)
        target.load_state_dict(source.state_dict())
        assert torch.equal(target(*x), expected)
    assert target.meta[RUNTIME_KEY]["name"] == "torchscript"


def test_install_runtime_switches_an_installed_model():
    quantized = _quantized()
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        expected = quantized(*x)
        assert runtime.install_runtime(quantized, "graph")["name"] == "graph"
        assert runtime.runner(quantized) is None and torch.equal(quantized(*x), expected)
        assert runtime.install_runtime(quantized, "torchscript")["name"] == "torchscript"
        assert runtime.runner(quantized) is not None and torch.equal(quantized(*x), expected)


def test_bad_inputs_are_explained_on_the_torchscript_runtime_as_on_the_graph():
    messages = []
    for name in ("torchscript", "graph"):
        with pytest.raises(fxq.InputError, match="input 'x' has shape") as raised:
            _quantized(runtime_name=name)(torch.randn(2, 32))
        messages.append(str(raised.value))
    assert messages[0] == messages[1] and "TorchScript" not in messages[0]


def test_without_kept_example_inputs_they_are_made_from_the_records():
    quantized = _quantized()
    del quantized.meta[runtime.EXAMPLES_KEY]
    (made,) = runtime.example_inputs_of(quantized)
    assert made.dtype == torch.float32 and made.shape == example_inputs("mlp")[0].shape
    assert runtime.install_runtime(quantized, "torchscript")["why"] == "asked for; bit-exact on the example inputs"


def test_large_example_inputs_are_not_kept():
    assert runtime.keep_examples((torch.zeros(runtime.EXAMPLES_MAX_BYTES // 4 + 1),)) is None
    kept = runtime.keep_examples((torch.ones(3),))
    assert torch.equal(kept[0], torch.ones(3))


def test_export_captured_bert_runs_on_torchscript_with_its_output_class_and_guards():
    model = _bert(layers=1)
    quantized = fxq.quantize(model, _batches(1, 0, 16)[0], _batches(1, 1, 16), backend="x86", capture="export",
                             runtime="torchscript")
    assert quantized.meta[RUNTIME_KEY]["name"] == "torchscript", quantized.meta[RUNTIME_KEY]["why"]
    ids = torch.randint(0, 30522, (1, 40))
    mask = torch.ones(1, 40, dtype=torch.long)
    with torch.no_grad():
        fast = quantized(input_ids=ids, attention_mask=mask)
        runtime.install_runtime(quantized, "graph")
        graph = quantized(ids, mask)
        runtime.install_runtime(quantized, "torchscript")
    assert type(fast) is type(graph)
    assert torch.equal(fast.last_hidden_state, graph.last_hidden_state)
    assert torch.equal(fast.pooler_output, graph.pooler_output)
    with pytest.raises(fxq.InputError, match="shape"):  # torch.export's guard: at most 512 positions
        quantized(torch.zeros(1, 600, dtype=torch.long), torch.ones(1, 600, dtype=torch.long))
