"""quantize_dynamic on Hugging Face model code: GPT-2's Conv1D is quantized as the Linear it is (dynamic and
weight-only), runtime Linears show the attributes model code reads (T5 reads ``.weight.dtype``), and a spec that
matches nothing says so instead of returning the float model silently."""

import warnings

import pytest
import torch
from torch import nn

import fxq
from fxq.metrics import sqnr_db
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.embedding import QuantizedEmbedding
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear

transformers = pytest.importorskip("transformers")


def _ids():
    torch.manual_seed(0)
    return torch.randint(0, 300, (2, 16))


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2Model(config).eval()


@pytest.mark.parametrize("spec, kind, min_db", [(None, DynamicLinear, 30),
                                                ({nn.Linear: fxq.WeightOnly(8, 32)}, WeightOnlyLinear, 30),
                                                ({nn.Linear: fxq.WeightOnly(4, 32)}, WeightOnlyLinear, 15)])
def test_gpt2_conv1d_layers_are_quantized_as_linears(spec, kind, min_db):
    model, ids = _gpt2(), _ids()
    conv1d = [name for name, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    quantized = fxq.quantize_dynamic(model, spec)
    assert conv1d and all(isinstance(quantized.get_submodule(name), kind) for name in conv1d)
    with torch.no_grad():
        assert sqnr_db(model(ids).last_hidden_state, quantized(ids).last_hidden_state) >= min_db


def test_t5_runs_with_dynamic_linears_that_show_their_weight():
    torch.manual_seed(0)
    config = transformers.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, vocab_size=300, d_kv=16)
    model, ids = transformers.T5EncoderModel(config).eval(), _ids()
    quantized = fxq.quantize_dynamic(model)  # T5's feed-forward reads self.wo.weight.dtype
    with torch.no_grad():
        assert sqnr_db(model(ids).last_hidden_state, quantized(ids).last_hidden_state) >= 30


@pytest.mark.parametrize("make", [lambda layer: DynamicLinear(torch.quantize_per_tensor(layer.weight.detach(),
                                                                                         0.01, 0, torch.qint8),
                                                              layer.bias),
                                  lambda layer: WeightOnlyLinear(layer, 8, 4)])
def test_runtime_linears_look_like_the_linear_they_replace(make):
    torch.manual_seed(0)
    layer = nn.Linear(8, 3)
    runtime = make(layer)
    assert (runtime.in_features, runtime.out_features) == (8, 3)
    assert runtime.weight.dtype == torch.float32 and runtime.weight.shape == layer.weight.shape
    assert torch.allclose(runtime.weight, layer.weight, atol=0.01)


@pytest.mark.parametrize("bits, atol", [(8, 0.02), (4, 0.3)])
def test_runtime_embeddings_show_their_table(bits, atol):
    torch.manual_seed(0)
    table = nn.Embedding(12, 16, padding_idx=0)
    runtime = QuantizedEmbedding(table, bits)
    assert runtime.weight.dtype == torch.float32 and runtime.weight.shape == table.weight.shape
    assert torch.allclose(runtime.weight, table.weight, atol=atol)
    assert not torch.allclose(runtime.weight, table.weight, atol=atol / 100)  # really the rounded table
    assert runtime.padding_idx == 0
    assert torch.equal(runtime(torch.arange(12)), runtime.weight)


def test_clip_text_runs_with_int4_preset_reading_its_position_table():
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4)
    model, ids = transformers.CLIPTextModel(config).eval(), _ids()
    quantized = fxq.quantize_dynamic(model, "int4")  # CLIP reads position_embedding.weight.shape[0]
    with torch.no_grad():
        assert sqnr_db(model(ids).last_hidden_state, quantized(ids).last_hidden_state) >= 10  # measured 13.3


def test_a_spec_matching_nothing_warns_and_the_report_names_what_was_missing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.warns(fxq.FxqWarning, match="converted nothing: the model has no LSTM, Linear "):
        quantized = fxq.quantize_dynamic(model, {nn.Linear, nn.LSTM})
    report = str(fxq.report_of(quantized))
    assert "matched no module: Linear" in report
    assert report.startswith("converted nothing; model ") and "nan" not in report  # no ratio of zero bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default spec tries LSTM and GRU too: no noise when a Linear matched
        assert fxq.report_of(fxq.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)))).unmatched == []
