import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
import fxq.api
from fxq.annotation import info
from fxq.metrics import sqnr_db
from fxq.nn.fused import FusedModule
from fxq.nn.reference import WeightQuantized
from fxq.qconfig import default_weight
from fxq.statistics import ChannelStatistics

CORRECTION = {"after insert-observers": "record-input-statistics", "before lower": "bias-correction"}


@pytest.fixture
def corrected():
    """Quantize a model with or without bias correction, the way a recipe wires it in."""

    def quantize(model, batches, backend="reference", correct=True, **prepare_options):
        prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(backend), batches[0], backend=backend,
                               recipe="none", passes=CORRECTION if correct else None,
                               **prepare_options)  # the passes under test, and no recipe's
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        return fxq.convert(prepared)

    return quantize


def _rounding_up_conv(backend: str) -> nn.Conv2d:
    """A conv whose weights all sit 0.6 of a step above a grid point, so all round up: the same error in every
    tap, which a nonzero-mean input turns into an output offset per channel."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3).eval()
    unit = torch.zeros(conv.weight.shape)
    unit[:, 0, 0, 0] = 1.0
    observer = default_weight(backend)()
    observer(unit)
    levels = 1 / observer.calculate_qparams()[0][0].item()  # a weight of `levels` steps sets the step
    step = 0.01
    with torch.no_grad():
        conv.weight.copy_((torch.randint(-20, 20, conv.weight.shape) + 0.6) * step)
        conv.weight[:, 0, 0, 0] = levels * step
    return conv


def _per_channel_mean_error(model, quantized, x):
    with torch.no_grad():
        return (quantized(x) - model(x)).mean((0, 2, 3)).abs().max().item()


@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_correction_removes_the_output_offset_of_weights_that_all_round_one_way(corrected, backend):
    model = _rounding_up_conv(backend)
    g = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(8, 8, 10, 10, generator=g) + 2,) for _ in range(4)]
    test = torch.randn(8, 8, 10, 10, generator=g) + 2
    plain, fixed = corrected(model, calibration, backend, correct=False), corrected(model, calibration, backend)
    before, after = _per_channel_mean_error(model, plain, test), _per_channel_mean_error(model, fixed, test)
    assert after < before / 10
    with torch.no_grad():
        gain = sqnr_db(model(test), fixed(test)) - sqnr_db(model(test), plain(test))
    assert gain > 6
    record = next(info(n) for n in fixed.graph.nodes if "bias_correction" in info(n).qparams)
    assert record.qparams["bias_correction"]["max_abs"] > record.qparams["bias_correction"]["mean_abs"] > 0
    assert any(s.pass_name == "bias-correction" and "max |correction|" in s.rule for s in record.history)


def test_zero_mean_inputs_change_nearly_nothing(corrected):
    model = _rounding_up_conv("reference")
    g = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(64, 8, 10, 10, generator=g),) for _ in range(4)]
    test = torch.randn(8, 8, 10, 10, generator=g)
    plain, fixed = corrected(model, calibration, correct=False), corrected(model, calibration)
    with torch.no_grad():
        change = sqnr_db(model(test), fixed(test)) - sqnr_db(model(test), plain(test))
    assert abs(change) < 0.2
    node = next(n for n in fixed.graph.nodes if "bias_correction" in info(n).qparams)
    step = max(info(node).qparams["weight"]["scale"])
    assert info(node).qparams["bias_correction"]["max_abs"] < step  # 0.4 step x 72 taps x |E[x]| ~ 0.01


def _bias(converted, target):
    module = dict(converted.named_modules())[target]
    module = module.module if isinstance(module, WeightQuantized) else module
    return (module.op if isinstance(module, FusedModule) else module).bias.detach().double()


def _qweight(converted, target):
    return dict(converted.named_modules())[target].qweight.dequantize().double()


class _Grouped(nn.Module):
    """Depthwise, grouped and transposed convs, one without a bias, and a strided transposed conv to skip."""

    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(6, 6, 3, groups=6, bias=False)
        self.grouped = nn.Conv2d(6, 9, (3, 2), groups=3, dilation=(1, 2))
        self.transposed = nn.ConvTranspose2d(9, 6, 3, groups=3)
        self.strided = nn.ConvTranspose2d(6, 4, 2, stride=2)

    def forward(self, x):
        y = torch.relu(self.depthwise(x))
        y = torch.relu(self.grouped(y))
        return self.strided(torch.relu(self.transposed(y)))


def test_grouped_depthwise_and_transposed_corrections_match_brute_force(corrected):
    torch.manual_seed(0)
    model = _Grouped().eval()
    g = torch.Generator().manual_seed(3)
    calibration = [(torch.rand(4, 6, 12, 12, generator=g) * torch.arange(1.0, 7.0).reshape(1, 6, 1, 1),)
                   for _ in range(3)]
    plain, fixed = corrected(model, calibration, correct=False), corrected(model, calibration)
    with torch.no_grad():
        x = torch.cat([b[0] for b in calibration]).double()
        inputs = {"depthwise": x}
        inputs["grouped"] = F.relu(F.conv2d(x, model.depthwise.weight.double(), None, groups=6))
        inputs["transposed"] = F.relu(F.conv2d(inputs["grouped"], model.grouped.weight.double(),
                                               model.grouped.bias.double(), dilation=(1, 2), groups=3))
    for name, groups in (("depthwise", 6), ("grouped", 3), ("transposed", 3)):
        layer = getattr(model, name)
        error = _qweight(fixed, name) - layer.weight.detach().double()
        assert torch.equal(_qweight(fixed, name), _qweight(plain, name))  # lower quantized the same weight
        mean = inputs[name].mean((0, 2, 3))
        constant = mean.reshape(1, -1, 1, 1).expand(1, -1, 9, 9)  # away from the borders every tap reads E[x]
        if name == "transposed":
            expected = F.conv_transpose2d(constant, error, groups=groups)[0, :, 4, 4]
        else:
            expected = F.conv2d(constant, error, groups=groups, dilation=layer.dilation)[0, :, 0, 0]
        original = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(expected)
        assert expected.abs().max() > 1e-4
        # the new bias is float32: compare the change, to float32's resolution at the bias's magnitude
        assert torch.allclose(_bias(fixed, name) - original, -expected, rtol=1e-3, atol=1e-7), name
    assert model.depthwise.bias is None  # the user's model is untouched; the converted copy has a bias
    strided = next(n for n in fixed.graph.nodes if n.target == "strided")
    assert any(rule == "bias-correction" and "stride (2, 2)" in reason for rule, reason in info(strided).declined)
    assert torch.equal(_bias(fixed, "strided"), _bias(plain, "strided"))


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(16, 8) / 3), nn.Parameter(torch.randn(16))
        self.w2 = nn.Parameter(torch.randn(4, 16) / 4)

    def forward(self, x):
        return F.linear(torch.relu(F.linear(x, self.w1, self.b1)), self.w2)


def test_functional_linears_with_and_without_bias(corrected):
    torch.manual_seed(0)
    model = _Functional().eval()
    before = copy.deepcopy(model.state_dict())
    calibration = [(torch.randn(32, 8) + 1,) for _ in range(3)]
    fixed = corrected(model, calibration)
    x = torch.cat([b[0] for b in calibration]).double()
    hidden = F.relu(F.linear(x, model.w1.double(), model.b1.double()))
    buffers = dict(fixed.named_buffers())
    nodes = {n.name: n for n in fixed.graph.nodes if info(n).concept == "linear"}
    assert set(nodes) == {"linear", "linear_1"}
    for name, weight, bias, mean in (("linear", model.w1, model.b1, x.mean(0)),
                                     ("linear_1", model.w2, None, hidden.mean(0))):
        node = nodes[name]
        qweight = buffers[node.args[1].args[0].target].dequantize().double()
        new_bias = buffers[node.args[2].target].double()
        original = bias.detach().double() if bias is not None else 0
        assert torch.allclose(new_bias, original - (qweight - weight.detach().double()) @ mean, atol=1e-6), name
    # the float bias is not kept next to its corrected copy
    weights = {key for key in fixed.state_dict() if not key.startswith("fxq_qparams.")}  # (activation qparams)
    assert weights == {"w1_quantized", "w2_quantized", "linear_corrected_bias", "linear_1_corrected_bias"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    native = corrected(model, calibration, "x86")
    with torch.no_grad():
        for converted in (fixed, native):
            assert sqnr_db(model(x.float()), converted(x.float())) > 25
    assert sum("bias_correction" in info(n).qparams for n in native.graph.nodes) == 2


class _Shared(nn.Module):
    """One linear called twice, on inputs with different means: each call gets its own correction."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x) + 2))


@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_each_call_site_corrected_alone_user_model_untouched_statistics_gone(corrected, backend):
    torch.manual_seed(0)
    model = _Shared().eval()
    before = copy.deepcopy(model.state_dict())
    calibration = [(torch.randn(16, 8) - 1,) for _ in range(3)]
    fixed = corrected(model, calibration, backend)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, ChannelStatistics) for m in fixed.modules())
    assert not any(info(n).statistics for n in fixed.graph.nodes)
    corrections = [info(n).qparams["bias_correction"] for n in fixed.graph.nodes
                   if "bias_correction" in info(n).qparams]
    assert len(corrections) == 2 and corrections[0] != corrections[1]
    if backend == "reference":
        first, second = _bias(fixed, "fc"), _bias(fixed, "fc_call2")
        assert not torch.allclose(first, second)
    else:  # native kernels, not reference islands: the statistics modules left no trace in the patterns
        assert all(info(n).lowered_to.startswith("Quantized") for n in fixed.graph.nodes
                   if "bias_correction" in info(n).qparams)
    with torch.no_grad():
        x = torch.randn(16, 8) - 1
        assert sqnr_db(model(x), fixed(x)) > 25


def test_exported_linear(corrected):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    calibration = [(torch.randn(8, 8) + 1,) for _ in range(3)]
    fixed = corrected(model, calibration, capture="export")
    assert sum("bias_correction" in info(n).qparams for n in fixed.graph.nodes) == 2
    assert not any(isinstance(m, ChannelStatistics) for m in fixed.modules())
    with torch.no_grad():
        x = calibration[0][0]
        assert sqnr_db(model(x), fixed(x)) > 25


def test_dynamic_int8_linears_are_corrected_too():
    """Dynamic quantization rounds the weight the same way; its activations are quantized per call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(64, 8) + 1
    prepared = fxq.prepare(model, fxq.QConfigMapping().set_global(fxq.get_default_dynamic_qconfig()), (x,),
                           recipe="none", passes=CORRECTION)
    prepared(x)
    converted = fxq.convert(prepared)
    means = (x.double().mean(0), torch.relu(model[0](x)).double().mean(0))
    for index, mean in zip(("0", "2"), means, strict=True):
        layer, dynamic = model[int(index)], dict(converted.named_modules())[index]
        error = dynamic.qweight.dequantize().double() - layer.weight.detach().double()
        original = layer.bias.detach().double() if layer.bias is not None else 0
        assert torch.allclose(dynamic.bias.double(), original - error @ mean, atol=1e-6), index


class _FunctionalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 2, 3, 3) / 4)

    def forward(self, x):
        return F.conv2d(x, self.w, None, 1, 1, 1, 2)  # grouped, no bias, every argument positional


@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_functional_grouped_conv_without_bias(corrected, backend):
    torch.manual_seed(0)
    model = _FunctionalConv().eval()
    calibration = [(torch.rand(4, 4, 8, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1),)
                   for _ in range(2)]
    fixed = corrected(model, calibration, backend)
    node = next(n for n in fixed.graph.nodes if "bias_correction" in info(n).qparams)
    if backend == "reference":
        qweight = dict(fixed.named_buffers())[node.args[1].args[0].target].dequantize().double()
        mean = torch.cat([b[0] for b in calibration]).double().mean((0, 2, 3))
        constant = mean.reshape(1, -1, 1, 1).expand(1, -1, 3, 3)
        expected = F.conv2d(constant, qweight - model.w.detach().double(), groups=2)[0, :, 0, 0]
        assert torch.allclose(dict(fixed.named_buffers())[node.args[2].target].double(), -expected, atol=1e-7)
    with torch.no_grad():
        x = calibration[0][0]
        assert sqnr_db(model(x), fixed(x)) > 25
