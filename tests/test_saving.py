import pytest
import torch

import fxq
from fxq.annotation import info
from tests.models import calibration_batches, eval_batches, example_inputs, make_model


def _quantized(name="resnet"):
    model = make_model(name)
    return fxq.quantize(model, example_inputs(name), calibration_batches(name), backend="x86")


def test_save_load_keeps_outputs_and_annotations(tmp_path):
    quantized = _quantized()
    path = tmp_path / "model.fxq.pt"
    fxq.save(quantized, path)
    loaded = fxq.load(path)
    x = eval_batches("resnet")[0][0]
    with torch.no_grad():
        assert torch.equal(loaded(x), quantized(x))
    before = [(info(n).concept, info(n).lowered_to, info(n).qconfig_rule) for n in quantized.graph.nodes]
    after = [(info(n).concept, info(n).lowered_to, info(n).qconfig_rule) for n in loaded.graph.nodes]
    assert after == before and any(lowered for _, lowered, _ in after)
    assert str(fxq.report_of(loaded)) == str(fxq.report_of(quantized))
    assert [r.name for r in fxq.pass_records(loaded)] == [r.name for r in fxq.pass_records(quantized)]


def test_a_plain_torch_save_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(_quantized("mlp"), path)
    with pytest.raises(fxq.ConfigError, match=r"fxq.save\(model, path\)"):
        fxq.load(path)


def test_save_refuses_what_is_not_a_graph_module(tmp_path):
    with pytest.raises(fxq.ConfigError, match="GraphModule"):
        fxq.save(torch.nn.Linear(2, 2), tmp_path / "x.pt")
