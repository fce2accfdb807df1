"""The failure groups random-graph fuzzing found in ordinary models, each as the few lines that reproduce it.

Every case runs the one-call API with its defaults on every backend and must give the right answer: SQNR
against float above a floor, and the same output on every call (some kernels were nondeterministic).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.nn.quantized.engine import using_engine
from tests.models import SquaredTail, sqnr

BACKENDS = ("reference", "x86", "qnnpack")


class SharedLinear(nn.Module):
    """A Linear called twice (tied layers): lowering failed on the second call."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


class Siamese(nn.Module):
    """One conv tower, one ReLU module, applied to two inputs; their features are compared."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 4)

    def forward(self, a, b):
        fa = self.act(self.conv(a)).mean((2, 3))
        fb = self.act(self.conv(b)).mean((2, 3))
        return self.head(fa - fb)


class ViewFlatten(nn.Module):
    """The classic flatten after a conv; int8 conv outputs are channels-last, where this view has no view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


def upsample(channels_in: int, channels_out: int, stride: int) -> nn.Module:
    """A 2x2 transposed convolution: fbgemm's kernel for it is wrong and nondeterministic for multiples of 8."""
    return nn.Sequential(nn.Conv2d(channels_in, channels_in, 1), nn.ConvTranspose2d(channels_in, channels_out, 2,
                                                                                    stride=stride))


def pooled_group_norm() -> nn.Module:
    """A group norm on a 1x1 spatial input (after global pooling): torch's int8 kernel returns garbage there."""
    return nn.Sequential(nn.Conv2d(16, 16, 1), nn.GroupNorm(8, 16))


class WideSoftmax(nn.Module):
    """A softmax over 512 values: outputs near 1/512, which a fixed [0, 1) int8 range rounds to zero."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 512)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=-1)


class Shifted(nn.Module):
    """A value far from zero ([-3, -2]) into a Linear: its int8 range must include zero, which costs two thirds
    of the levels; the model must still be right (a rounding of it within the floor)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.sigmoid(x) - 3.0)


class ZeroCentredPool(nn.Module):
    """A global average pool of zero-centred conv features over 32x32 positions: their mean spans a few of the
    features' int8 steps, so on the features' qparams it came out at 10.5 dB (29 dB with its own)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1, bias=False)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)


CASES = {
    "shared linear": (SharedLinear, [(4, 8)]),
    "siamese conv": (Siamese, [(4, 3, 8, 8), (4, 3, 8, 8)]),
    "view flatten": (ViewFlatten, [(4, 3, 8, 8)]),
    "transposed 2x2 stride 1": (lambda: upsample(16, 8, 1), [(4, 16, 3, 3)]),
    "transposed 2x2 stride 2": (lambda: upsample(16, 16, 2), [(4, 16, 8, 8)]),
    "transposed 2x2 8->16": (lambda: upsample(8, 16, 2), [(4, 8, 5, 5)]),
    "group norm 1x1": (pooled_group_norm, [(4, 16, 1, 1)]),
    "softmax over 512": (WideSoftmax, [(4, 16)]),
    "input far from zero": (Shifted, [(4, 8)]),
    "global pool of zero-centred values": (ZeroCentredPool, [(4, 4, 32, 32)]),
    "clipped tail squared downstream": (SquaredTail, [(4, 16, 12, 12)]),
}


def _inputs(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) for shape in shapes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_reproducer_gives_the_right_answer_every_time(case, backend):
    build, shapes = CASES[case]
    torch.manual_seed(0)
    model = build().eval()
    calibration = [_inputs(shapes, seed) for seed in range(8)]
    quantized = fxq.quantize(model, calibration[0], calibration, backend=backend)
    x = _inputs(shapes, 100)
    with torch.no_grad():
        expected, first, second = model(*x), quantized(*x), quantized(*x)
    assert torch.equal(first, second), "the quantized model gives different outputs for the same input"
    assert sqnr(expected, first) > 15, f"{case} on {backend}: {sqnr(expected, first):.1f} dB"


@pytest.mark.parametrize("backend", ("x86", "qnnpack"))
def test_each_call_of_a_shared_module_runs_its_own_kernel_with_its_own_output_range(backend):
    model = SharedLinear().eval()
    calibration = [_inputs([(4, 8)], seed) for seed in range(4)]
    quantized = fxq.quantize(model, calibration[0], calibration, backend=backend)
    lowered = {n.target: fxq.info(n).lowered_to for n in quantized.graph.nodes if n.op == "call_module"}
    # the first fused its ReLU; the second's output is the model's: x86's kernel returns it float, qnnpack has none
    second_kind = "QuantizedLinearFloatOutput" if backend == "x86" else "QuantizedLinear"
    assert lowered == {"fc": "QuantizedLinear+relu", "fc_call2": second_kind}
    first, second = quantized.get_submodule("fc"), quantized.get_submodule("fc_call2")
    assert torch.equal(first.qweight.int_repr(), second.qweight.int_repr())  # one weight, two kernels
    if backend == "qnnpack":
        assert first.scale != second.scale  # the two calls see different ranges


def test_view_on_a_channels_last_int8_value_becomes_reshape():
    calibration = [_inputs([(4, 3, 8, 8)], seed) for seed in range(4)]
    quantized = fxq.quantize(ViewFlatten().eval(), calibration[0], calibration, backend="x86")
    methods = [n.target for n in quantized.graph.nodes if n.op == "call_method"]
    assert "view" not in methods and "reshape" in methods


class GatedReLU6(nn.Module):
    """A batch norm whose output range equals what a ReLU6 passes: the ReLU6 sat between a dequantize and a
    quantize with equal qparams, and qnnpack lowered it to its int8 clamp, which its table excludes (5 dB)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(12)
        self.act = nn.ReLU6()
        self.conv = nn.Conv2d(12, 4, 1)  # reads the leaky_relu in int8, so that one is int8 too
        with torch.no_grad():
            self.bn.running_mean.normal_(0, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.conv(F.leaky_relu(self.act(self.bn(torch.sigmoid(x))), 0.2))


class SelfAdd(nn.Module):
    """An add of a value that is all but zero (the mean of a layer norm's output over its normalized dimension)
    to an ordinary one: the first's scale is eps, and qnnpack's add refuses the input/output scale ratio."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        v = self.norm(x).mean(-1, keepdim=True)
        return v.add(x)


class PooledNorm(nn.Module):
    """Instance norm -> global pool (exactly zero in float) -> ELU -> conv: calibration sees the ELU output as a
    constant, its scale is eps, and qnnpack's int32 bias at eps times the weight scale overflowed (7 dB)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(16, affine=True)
        self.act = nn.ELU()
        self.conv = nn.Conv2d(16, 32, 1, groups=16)

    def forward(self, x):
        return self.conv(self.act(F.adaptive_avg_pool2d(self.norm(x), 1)))


# qnnpack cases whose op must stay float or a reference island: (model, input shape, the op's concept, what it
# became, a fragment of the reason recorded on the graph)
QNNPACK_LIMITS = {
    "relu6 its table excludes": (GatedReLU6, (4, 12, 12, 16), "relu6", "float", "stays float: backend 'qnnpack'"),
    "add outside scale ratios": (SelfAdd, (2, 8, 8, 8), "add", "reference:add", "scale ratios in [2**-14, 2**8)"),
    "conv bias overflowing int32": (PooledNorm, (3, 16, 6, 6), "conv2d", "reference:conv2d", "overflows"),
}


@pytest.mark.parametrize("case", list(QNNPACK_LIMITS))
def test_qnnpack_kernel_limits_leave_the_op_to_float_math_with_the_reason(case):
    build, shape, concept, status, reason = QNNPACK_LIMITS[case]
    torch.manual_seed(0)
    model = build().eval()
    calibration = [(torch.rand(*shape),) for _ in range(8)]
    with using_engine("qnnpack"):
        quantized = fxq.quantize(model, calibration[0], calibration, backend="qnnpack")
        x = torch.rand(*shape)
        expected, got = model(x), quantized(x)
    # within a few int8 steps of float everywhere (the add's float output is zero up to rounding: no SQNR there)
    assert torch.allclose(got, expected, atol=0.05 * float(expected.abs().max()) + 1e-3)
    op = next(n for n in quantized.graph.nodes if fxq.info(n).concept == concept)
    assert fxq.info(op).lowered_to == status
    declined = [text for n in quantized.graph.nodes for _, text in fxq.info(n).declined]
    assert any(reason in text for text in declined), declined
