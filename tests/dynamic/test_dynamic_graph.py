"""Dynamic quantization through the graph pipeline: a dynamic qconfig in a QConfigMapping, prepare + convert,
no calibration."""

import pytest
import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.metrics import sqnr_db
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.dynamic_rnn import DynamicGRU, DynamicLSTM
from fxq.nn.quantized.engine import using_engine
from fxq.qconfig import get_default_dynamic_qconfig
from tests.dynamic.test_quantize_dynamic import LanguageModel, _tokens


def _convert(model, mapping, example):
    prepared = fxq.prepare(model, mapping, example, backend="x86")
    return fxq.convert(prepared)  # nothing to calibrate: dynamic ops have no activation observers


def test_graph_path_matches_module_swap_exactly():
    torch.manual_seed(0)
    model = LanguageModel().eval()
    dynamic = get_default_dynamic_qconfig(torch.qint8, "x86")
    mapping = fxq.QConfigMapping().set_object_type(nn.Linear, dynamic).set_object_type(nn.LSTM, dynamic)
    tokens = _tokens()
    converted = _convert(model, mapping, (tokens,))
    swapped = fxq.quantize_dynamic(model, {nn.Linear, nn.LSTM})
    assert isinstance(converted.get_submodule("lstm"), DynamicLSTM)
    assert isinstance(converted.get_submodule("head"), DynamicLinear)
    assert torch.equal(converted(tokens), swapped(tokens))
    rows = {row.name: row for row in fxq.inspect(converted)}
    assert rows["head"].status == "DynamicLinear(dynamic qint8)" and rows["head"].rule == "object_type(Linear)"
    assert rows["embed"].status == "float: qconfig is None (rule default(float))"


def test_fused_linear_relu_becomes_one_dynamic_kernel_and_fp16_works():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    x = torch.randn(4, 16)
    for dtype in (torch.qint8, torch.float16):
        mapping = fxq.QConfigMapping().set_global(get_default_dynamic_qconfig(dtype))
        converted = _convert(model, mapping, (x,))
        first = converted.get_submodule("0")
        assert isinstance(first, DynamicLinear) and first.relu and first.fp16 == (dtype == torch.float16)
        error = (converted(x) - model(x)).abs().max() / model(x).abs().max()
        assert error < (0.02 if dtype == torch.qint8 else 1e-3)


def test_ops_without_a_dynamic_kernel_stay_float_with_the_reason():
    model = nn.Sequential(nn.Conv1d(4, 4, 1), nn.Flatten(), nn.Linear(16, 2)).eval()
    mapping = fxq.QConfigMapping().set_global(get_default_dynamic_qconfig())
    converted = _convert(model, mapping, (torch.randn(2, 4, 4),))
    conv = next(n for n in converted.graph.nodes if n.target == "0")
    assert "no dynamic kernel for conv1d" in info(conv).float_reason
    assert isinstance(converted.get_submodule("2"), DynamicLinear)


class _Audio(nn.Module):
    """Convolution over time, then a 2-layer LSTM and a bidirectional GRU: the recurrent part holds most weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(16, 32, 3, padding=1)
        self.lstm = nn.LSTM(32, 48, num_layers=2, batch_first=True)
        self.gru = nn.GRU(48, 24, bidirectional=True, batch_first=True)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        h, _ = self.lstm(torch.relu(self.conv(x)).transpose(1, 2))
        h, _ = self.gru(h)
        return self.head(h[:, -1])


@pytest.mark.parametrize("backend", ["x86", "qnnpack", "reference"])
def test_static_defaults_quantize_lstm_and_gru_dynamically_and_torchscript_runs_them(backend, tmp_path):
    torch.manual_seed(0)
    model = _Audio().eval()
    batches = [(torch.randn(4, 16, 20),) for _ in range(8)]
    quantized = fxq.quantize(model, batches[0], batches, backend=backend)
    assert isinstance(quantized.get_submodule("lstm"), DynamicLSTM)
    assert isinstance(quantized.get_submodule("gru"), DynamicGRU)
    report = fxq.report_of(quantized)
    assert not report.left_float and report.size_ratio < 0.45  # measured 0.39x (float LSTM/GRU: 0.99x)
    x = torch.randn(4, 16, 20)
    with torch.no_grad():
        assert sqnr_db(model(x), quantized(x)) > 35  # measured 47.0, 43.7, 49.4 dB (reference: 25.9 on fbgemm)
    if backend == "reference":
        return  # simulated ops in float: TorchScript cannot compile those (docs/runtime.md)
    path = tmp_path / "audio.pt"
    fxq.export(quantized, path, format="torchscript")  # checks the frozen module equals the model exactly
    with using_engine(backend):  # loading packs the weights for the current engine
        assert torch.equal(torch.jit.load(str(path))(x), quantized(x))


def test_a_swapped_lstm_and_gru_script_and_freeze_and_stay_picklable():
    import pickle

    torch.manual_seed(0)
    model = _Audio().eval()
    swapped = fxq.quantize_dynamic(model, {nn.LSTM, nn.GRU})
    x = torch.randn(2, 16, 12)
    frozen = torch.jit.freeze(torch.jit.script(swapped))
    assert torch.equal(frozen(x), swapped(x))
    assert isinstance(swapped.get_submodule("lstm"), DynamicLSTM)  # scripting swapped nothing in the model
    copied = pickle.loads(pickle.dumps(swapped))
    assert torch.equal(copied(x), swapped(x)) and len(copied.get_submodule("lstm").cells) == 2
    assert not any(key.startswith("lstm.cells") for key in swapped.state_dict())
