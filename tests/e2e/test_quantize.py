import pytest
import torch

import fxq
from fxq.errors import CalibrationError
from tests.models import calibration_batches, eval_batches, example_inputs, make_model, sqnr


def test_one_call_quantize_reports_what_it_did():
    model = make_model("transformer")
    quantized = fxq.quantize(model, example_inputs("transformer"), [b[0] for b in calibration_batches("transformer")])
    report = fxq.report_of(quantized)
    assert report.backend == "x86"
    float_nodes = dict(report.left_float)
    assert float_nodes["act"] == "backend 'x86' has no quantized form of gelu"
    assert not any(name.startswith("getitem") for name in float_nodes)  # shape arithmetic is not an op
    assert ("q", "QuantizedLinear") in report.quantized
    assert report.size_after < 0.5 * report.size_before
    assert "ops quantized" in str(report) and "gelu" in str(report)
    x = eval_batches("transformer")[0]
    assert sqnr(model(*x), quantized(*x)) > 20


def test_quantize_without_calibration_data_is_an_error():
    with pytest.raises(CalibrationError, match="no calibration batches"):
        fxq.quantize(make_model("mlp"), example_inputs("mlp"), [])


def test_quantize_on_reference_backend_and_custom_mapping():
    model = make_model("mlp")
    mapping = fxq.get_default_qconfig_mapping("reference").set_module_name("fc3", None)
    quantized = fxq.quantize(model, example_inputs("mlp"), calibration_batches("mlp"), backend="reference",
                             qconfig_mapping=mapping)
    report = fxq.report_of(quantized)
    assert dict(report.left_float)["fc3"].startswith("qconfig is None")
    with torch.no_grad():
        x = eval_batches("mlp")[0]
        assert sqnr(model(*x), quantized(*x)) > 25


def test_the_report_lists_an_op_whose_output_nests_float_tensors():
    """An LSTM returns (output, (h, c)); asked for static quantization it stays float (the default mapping
    quantizes it dynamically), and the report must say so."""

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc, self.lstm = torch.nn.Linear(8, 8), torch.nn.LSTM(8, 8, batch_first=True)

        def forward(self, x):
            return self.lstm(self.fc(x))[0]

    batches = [(torch.randn(2, 5, 8),) for _ in range(3)]
    mapping = fxq.get_default_qconfig_mapping("x86").set_object_type(torch.nn.LSTM, fxq.get_default_qconfig("x86"))
    report = fxq.report_of(fxq.quantize(Recurrent().eval(), batches[0], batches, backend="x86",
                                        qconfig_mapping=mapping))
    assert dict(report.left_float)["lstm"] == "backend 'x86' has no quantized form of lstm"


def test_a_dataloader_of_inputs_and_labels_calibrates_with_a_warning():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    inputs, labels = torch.randn(64, 8), torch.randint(0, 4, (64,))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=16)
    with pytest.warns(fxq.FxqWarning, match=r"batch 0 holds 2 items and the model takes 1 input\(s\): the last 1"):
        quantized = fxq.quantize(model, (inputs[:2],), loader)
    reference = fxq.quantize(model, (inputs[:2],), [(inputs[i:i + 16],) for i in range(0, 64, 16)])
    assert torch.equal(quantized(inputs), reference(inputs))  # calibrated on the same inputs, labels unused


class TokenModel(torch.nn.Module):
    """An embedding table, a hidden layer and a vocabulary head, which may share the table (tied weights)."""

    def __init__(self, tied=False):
        super().__init__()
        self.embed, self.hidden = torch.nn.Embedding(300, 32), torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(32, 300, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.hidden(self.embed(ids))))


def _token_batches(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 300, (2, 10), generator=generator),) for _ in range(count)]


def _stored_bytes(model):
    tensors = {id(t): t for t in model.state_dict().values() if isinstance(t, torch.Tensor)}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("tied", [False, True], ids=["own-table", "tied-table"])
def test_default_quantize_stores_embedding_tables_in_8_bit_rows(capture, tied):
    from fxq.nn.quantized.embedding import QuantizedEmbedding

    torch.manual_seed(0)
    model = TokenModel(tied).eval()
    table = model.embed.weight.detach().clone()
    qm = fxq.quantize(model, _token_batches(1, 0)[0], _token_batches(4, 1), capture=capture)
    embeddings = [m for m in qm.modules() if isinstance(m, QuantizedEmbedding)]
    assert len(embeddings) == 1 and embeddings[0].bits == 8
    row = next(n for n in qm.graph.nodes if n.op == "call_module" and isinstance(qm.get_submodule(n.target),
                                                                                   QuantizedEmbedding))
    assert fxq.info(row).lowered_to == "QuantizedEmbedding(weight-only 8-bit rows)"
    (ids,) = _token_batches(1, 2)[0]
    with torch.no_grad():
        assert sqnr(model(ids), qm(ids)) >= 25
    assert torch.equal(model.embed.weight, table) and isinstance(model.embed.weight, torch.nn.Parameter)
    # every weight in 8 bits, with per-row and per-channel scales that weigh on rows of 32 (float table: 0.63x)
    assert _stored_bytes(qm) <= 0.35 * _stored_bytes(model)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_mapping_rule_keeps_embedding_tables_float(capture):
    model = TokenModel().eval()
    mapping = fxq.get_default_qconfig_mapping("x86").set_object_type(torch.nn.Embedding, None)
    qm = fxq.quantize(model, _token_batches(1, 0)[0], _token_batches(2, 1), qconfig_mapping=mapping,
                      capture=capture)
    lookups = [n for n in qm.graph.nodes if fxq.info(n).concept == "embedding"]
    assert len(lookups) == 1 and fxq.info(lookups[0]).qconfig_rule == "object_type(Embedding)"
    assert fxq.info(lookups[0]).lowered_to == "float"
    assert fxq.info(lookups[0]).float_reason == "qconfig is None (rule object_type(Embedding))"


class CausalConvolutions(torch.nn.Module):
    """Dilated causal 1-d convolutions that crop their padding (x[:, :, :-p]) and a head on the last step
    (x[:, :, -1]); the shape test makes symbolic tracing fail, so the graph is exported."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv1d(8, 8, 3, dilation=d, padding=2 * d) for d in (1, 2))
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        for conv in self.convs:
            y = conv(x)[:, :, :x.shape[-1]]
            x = torch.relu(y) + (x if x.shape[1] == y.shape[1] else 0)
        return self.head(x[:, :, -1])


def test_an_exported_graphs_slices_run_on_int8_values():
    torch.manual_seed(0)
    model = CausalConvolutions().eval()
    batches = [(torch.randn(4, 8, 32),) for _ in range(4)]
    qm = fxq.quantize(model, batches[0], batches)
    assert qm.meta["fxq_capture"]["how"] == "export" and qm.meta["fxq_recipe"]["name"] == "cnn"
    slices = [n for n in qm.graph.nodes if fxq.info(n).concept == "slice"]
    assert len(slices) >= 3 and all(fxq.info(n).float_reason is None for n in slices)
    assert "0 left float" in str(fxq.report_of(qm))
    x = torch.randn(4, 8, 32)
    with torch.no_grad():
        assert sqnr(model(x), qm(x)) >= 30


class Reparametrized(torch.nn.Module):
    """A weight-normed convolution (audio vocoders, wav2vec2) and a spectral-normed linear (GAN discriminators)."""

    def __init__(self):
        super().__init__()
        parametrizations = torch.nn.utils.parametrizations
        self.conv = parametrizations.weight_norm(torch.nn.Conv1d(8, 16, 5, padding=2))
        self.head = parametrizations.spectral_norm(torch.nn.Linear(16, 4))

    def forward(self, x):
        return self.head(torch.nn.functional.leaky_relu(self.conv(x), 0.1).mean(-1))


def test_parametrized_weights_are_quantized_as_the_weights_they_compute_and_the_model_keeps_its_own(tmp_path):
    from fxq.nn.quantized import QuantizedConv, QuantizedLinearFloatOutput

    torch.manual_seed(0)
    model = Reparametrized().eval()
    batches = [(torch.randn(2, 8, 40),) for _ in range(3)]
    before = model(*batches[0])
    qm = fxq.quantize(model, batches[0], batches)
    assert qm.meta["fxq_capture"]["how"] == "fx"  # no parametrized leaf left for tracing to keep whole
    assert isinstance(qm.get_submodule("conv"), QuantizedConv)
    assert isinstance(qm.get_submodule("head"), QuantizedLinearFloatOutput)
    x = torch.randn(3, 8, 40)
    with torch.no_grad():
        assert sqnr(model(x), qm(x)) >= 30
    # the user's layers are still parametrized, with the same weights
    assert torch.nn.utils.parametrize.is_parametrized(model.conv, "weight")
    assert torch.nn.utils.parametrize.is_parametrized(model.head, "weight")
    assert torch.equal(model(*batches[0]), before)
    fxq.save(qm, tmp_path / "m.fxq")  # the dynamically made Parametrized* classes are not in the file
    assert torch.equal(fxq.load(tmp_path / "m.fxq")(x), qm(x))
    dynamic = fxq.quantize_dynamic(model)
    assert fxq.report_of(dynamic).converted["DynamicLinear(qint8)"] == 1
    assert torch.nn.utils.parametrize.is_parametrized(model.head, "weight")


class SharedEncoder(torch.nn.Module):
    """One encoder applied to both inputs (a siamese network; ALBERT shares its layers the same way)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(8, 8)

    def forward(self, a, b):
        return torch.nn.functional.cosine_similarity(self.encoder(a), self.encoder(b))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_module_called_twice_warns_that_its_weight_is_stored_per_call(capture):
    import warnings

    batches = [(torch.randn(2, 8), torch.randn(2, 8)) for _ in range(3)]
    with pytest.warns(fxq.FxqWarning, match=r"called more than once .* 'encoder' \(2 copies\).*quantize_dynamic"):
        fxq.quantize(SharedEncoder().eval(), batches[0], batches, capture=capture)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fxq.FxqWarning)  # one call per module: nothing to say
        fxq.quantize(TokenModel().eval(), _token_batches(1, 0)[0], _token_batches(2, 1), capture=capture)
