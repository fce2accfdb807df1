"""Dynamic quantization through the graph pipeline: a dynamic qconfig in a QConfigMapping, prepare + convert,
no calibration."""

import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.dynamic_rnn import DynamicLSTM
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
