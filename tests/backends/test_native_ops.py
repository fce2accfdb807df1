"""Native kernels for the ops beyond the test models: transposed convolutions (per-tensor weights on x86),
functional linear/conv with weight parameters, leaky_relu, elu, hardsigmoid, group/instance/batch norm.

Each model is checked against the same backend table lowered without its kernel rules ("x86-unlowered"): same
decisions and same quantized weights, so the comparison isolates the kernels themselves.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.annotation import info
from fxq.backends import get_backend, register_backend
from fxq.backends.x86 import PER_TENSOR_TRANSPOSED
from fxq.nn.quantized import QuantizedConv, QuantizedLinearFloatOutput
from tests.models import sqnr

for _name in ("x86", "qnnpack"):
    register_backend(replace(get_backend(_name), name=f"{_name}-unlowered", lowering_rules=()))


class Decoder2d(nn.Module):
    """conv -> group norm -> leaky relu -> instance norm -> transposed conv -> elu -> batch norm (standalone)
    -> functional conv -> hardsigmoid gate -> pooling -> functional linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.group_norm = nn.GroupNorm(2, 8)
        self.leaky = nn.LeakyReLU(0.2)
        self.instance_norm = nn.InstanceNorm2d(8, affine=True)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.elu = nn.ELU(0.7)
        self.bn = nn.BatchNorm2d(4)
        self.w = nn.Parameter(torch.randn(6, 4, 3, 3) * 0.2)
        self.b = nn.Parameter(torch.randn(6) * 0.1)
        self.fw = nn.Parameter(torch.randn(10, 6) * 0.3)
        self.fb = nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x):
        x = self.instance_norm(self.leaky(self.group_norm(self.conv(x))))
        x = self.bn(self.elu(self.up(x)))
        x = F.conv2d(x, self.w, self.b, 1, 1)
        x = x * F.hardsigmoid(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.linear(x, self.fw, self.fb)


class Decoder1d(nn.Module):
    """conv1d -> transposed conv1d -> batch norm 1d (standalone) -> functional leaky relu / elu -> conv1d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.up = nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1, output_padding=0)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Conv1d(8, 3, 1)

    def forward(self, x):
        x = self.bn(self.up(torch.relu(self.conv(x))))
        return self.out(F.elu(F.leaky_relu(x, 0.1), 0.5))


CASES = {"decoder2d": (Decoder2d, (2, 3, 8, 8)), "decoder1d": (Decoder1d, (2, 4, 16))}


def _model(name):
    torch.manual_seed(0)
    cls, shape = CASES[name]
    model = cls()
    model.train()
    with torch.no_grad():  # real batch-norm statistics
        for _ in range(4):
            model(torch.randn(8, *shape[1:]))
    return model.eval(), shape


def _convert(name, backend):
    model, shape = _model(name)
    torch.manual_seed(1)
    mapping = fxq.get_default_qconfig_mapping(backend.split("-")[0])
    prepared = fxq.prepare(model, mapping, (torch.randn(shape),), backend=backend)
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(shape))
    return model, fxq.convert(prepared)


def _outputs(model, shape):
    torch.manual_seed(2)
    with torch.no_grad():
        return torch.cat([model(torch.randn(shape)) for _ in range(4)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_match_the_unlowered_graph(name):
    _, native = _convert(name, "x86")
    float_model, unlowered = _convert(name, "x86-unlowered")
    shape = CASES[name][1]
    db = sqnr(_outputs(unlowered, shape), _outputs(native, shape))
    assert db >= 40, f"{name}: native vs unlowered {db:.1f} dB"
    assert sqnr(_outputs(float_model, shape), _outputs(native, shape)) >= 20  # and int8 is still the model


@pytest.mark.parametrize("name", sorted(CASES))
def test_qnnpack_kernels_match_under_the_qnnpack_engine(name):
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        _, native = _convert(name, "qnnpack")
        _, unlowered = _convert(name, "qnnpack-unlowered")
        shape = CASES[name][1]
        db = sqnr(_outputs(unlowered, shape), _outputs(native, shape))
    finally:
        torch.backends.quantized.engine = previous
    assert db >= 40, f"{name}: qnnpack vs unlowered {db:.1f} dB"
    assert _lowered(native)["conv_transpose" + name[-2:]] == "QuantizedConv"


def _lowered(native):
    return {info(n).concept: info(n).lowered_to for n in native.graph.nodes
            if n.op in ("call_module", "call_function", "call_method") and info(n).concept}


def test_every_op_of_the_2d_decoder_runs_an_int8_kernel():
    _, native = _convert("decoder2d", "x86")
    lowered = _lowered(native)
    assert lowered["group_norm"] == "quantized.group_norm"
    assert lowered["instance_norm"] == "quantized.instance_norm"
    assert lowered["leaky_relu"] == "quantized.leaky_relu"
    assert lowered["elu"] == "quantized.elu"
    assert lowered["batch_norm"] == "quantized.batch_norm2d"
    # observed by default, and torch's int8 hardsigmoid only makes [0, 1) qparams: a reference island
    assert lowered["hardsigmoid"] == "reference:hardsigmoid"
    assert lowered["conv_transpose2d"] == "QuantizedConv"
    modules = dict(native.named_modules())
    functional = [n for n in native.graph.nodes if n.op == "call_module" and info(n).concept in ("linear", "conv2d")
                  and n.target not in ("conv",)]
    assert {type(modules[n.target]) for n in functional} == {QuantizedConv, QuantizedLinearFloatOutput}
    floats = [n.name for n in native.graph.nodes if info(n).lowered_to == "float"]
    assert floats == [], floats


def test_bounded_ops_given_fixed_qparams_run_their_int8_kernels():
    """torch.ao's default fixes sigmoid/hardsigmoid/tanh qparams to their bound; that form lowers to the kernels."""
    from fxq.observers import SIGMOID_QPARAMS, TANH_QPARAMS

    class Gates(nn.Module):
        def forward(self, x):
            return torch.tanh(x) * F.hardsigmoid(x) + torch.sigmoid(x)

    unit, signed = fxq.QConfig(activation=SIGMOID_QPARAMS, weight=None), fxq.QConfig(activation=TANH_QPARAMS,
                                                                                          weight=None)
    mapping = fxq.get_default_qconfig_mapping("x86").set_object_type(F.hardsigmoid, unit) \
        .set_object_type(torch.sigmoid, unit).set_object_type(torch.tanh, signed)
    calibration = [torch.randn(4, 8) * 3 for _ in range(4)]
    converted = {}
    for backend in ("x86", "x86-unlowered"):
        prepared = fxq.prepare(Gates().eval(), mapping, (calibration[0],), backend=backend)
        for x in calibration:
            prepared(x)
        converted[backend] = fxq.convert(prepared)
    lowered = _lowered(converted["x86"])
    assert (lowered["tanh"], lowered["hardsigmoid"], lowered["sigmoid"]) == ("quantized.tanh", "quantized.hardsigmoid",
                                                                             "quantized.sigmoid")
    x = torch.randn(4, 8) * 3
    assert sqnr(converted["x86-unlowered"](x), converted["x86"](x)) > 30


def test_transposed_conv_weight_is_per_tensor_on_x86_with_the_reason():
    _, native = _convert("decoder2d", "x86")
    up = next(n for n in native.graph.nodes if info(n).concept == "conv_transpose2d")
    weight = info(up).qparams["weight"]
    assert weight["scheme"] == "per_tensor" and weight["why_per_tensor"] == PER_TENSOR_TRANSPOSED
    qweight = native.get_submodule(up.target).qweight
    assert qweight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric) and qweight.q_zero_point() == 0
    conv = next(n for n in native.graph.nodes if n.target == "conv")
    assert info(conv).qparams["weight"]["scheme"] == "per_channel"  # only where the kernel requires it


def test_reference_backend_keeps_transposed_weights_per_channel():
    _, reference = _convert("decoder2d", "reference")
    up = next(n for n in reference.graph.nodes if info(n).concept == "conv_transpose2d")
    assert info(up).qparams["weight"]["scheme"] == "per_channel"


def test_functional_weights_are_stored_once_in_int8():
    float_model, native = _convert("decoder2d", "x86")
    state = native.state_dict()
    assert not any(key in ("w", "b", "fw", "fb") for key in state), sorted(state)
    assert not [key for key in state if key.endswith("_quantized")], sorted(state)
    assert _tensor_bytes(native) < 0.5 * _tensor_bytes(float_model)  # small model: norms and biases stay float


def _tensor_bytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_functional_op_keeps_its_annotation_after_lowering():
    _, native = _convert("decoder2d", "x86")
    linear = next(n for n in native.graph.nodes if info(n).concept == "linear")
    record = info(linear)
    assert record.qconfig is not None and record.qconfig_rule == "global"
    assert [s.pass_name for s in record.history][-1] == "lower"
    assert "weight" in record.qparams and record.lowered_to == "QuantizedLinearFloatOutput"


def test_one_dimensional_ops_lower():
    _, native = _convert("decoder1d", "x86")
    lowered = _lowered(native)
    assert lowered["batch_norm"] == "quantized.batch_norm1d"
    assert lowered["leaky_relu"] == "quantized.leaky_relu" and lowered["elu"] == "quantized.elu"
    assert lowered["conv_transpose1d"] == "QuantizedConv"
    up = next(n for n in native.graph.nodes if info(n).concept == "conv_transpose1d")
    assert native.get_submodule(up.target).output_padding == (0,)


def test_transposed_conv_module_round_trips_state_dict():
    _, native = _convert("decoder2d", "x86")
    up = next(n for n in native.graph.nodes if info(n).concept == "conv_transpose2d")
    module = native.get_submodule(up.target)
    x = torch.quantize_per_tensor(torch.randn(1, 8, 4, 4), 0.05, 64, torch.quint8)
    clone = QuantizedConv(module.qweight, None, 1.0, 0, False, 1, 0, 1, 1, transposed=True,
                          output_padding=module.output_padding)
    clone.load_state_dict(module.state_dict())
    clone.stride, clone.padding = module.stride, module.padding
    clone.scale, clone.zero_point = module.scale, module.zero_point
    clone._repack()
    assert torch.equal(clone(x).int_repr(), module(x).int_repr())
    assert "output_padding" in repr(module) and "per-tensor" in repr(module)
