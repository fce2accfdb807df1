"""Static int8 kernel modules (QuantizedLinear, QuantizedLinearFloatOutput, QuantizedConv) keep one copy of their
weight, the kernel's packed one, and read it back exactly: state_dict, copies, pickles, fxq.save and TorchScript see
what they saw when the modules kept a second copy. Where a kernel cannot give the weight back exactly they keep it."""

import copy
import pickle

import pytest
import torch

import fxq
from fxq.nn.quantized import QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput, weight_state
from fxq.nn.quantized.engine import using_engine
from tests.backends.test_native_lowering import _convert
from tests.models import eval_batches

ENGINES = [e for e in ("x86", "qnnpack") if e in torch.backends.quantized.supported_engines]


def _weight(shape, per_channel, seed, exact_float32_scales=True):
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if per_channel:
        scales = (values.abs().flatten(1).amax(1) / 127).double()
        if not exact_float32_scales:
            scales = scales * (1 + 1e-12)
        return torch.quantize_per_channel(values, scales, torch.zeros(shape[0], dtype=torch.long), 0, torch.qint8)
    scale = float(values.abs().max() / 127) * (1 if exact_float32_scales else 1 + 1e-12)
    return torch.quantize_per_tensor(values, scale, 0, torch.qint8)


def _qinput(shape, seed=3):
    return torch.quantize_per_tensor(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), 0.05, 64,
                                     torch.quint8)


def _cases(engine):
    """(id, make(weight) -> module, weight shape, per-channel, input) for each kind of static kernel module."""
    bias = torch.randn(8, generator=torch.Generator().manual_seed(1))
    for per_channel in (False, True):
        kind = "per_channel" if per_channel else "per_tensor"
        yield (f"linear-{kind}", lambda w: QuantizedLinear(w, bias, 0.1, 60, True), (8, 16), per_channel,
               _qinput((4, 16)))
        if engine == "x86":
            yield (f"linear_float_output-{kind}", lambda w: QuantizedLinearFloatOutput(w, bias, 0.05, 64, False),
                   (8, 16), per_channel, torch.randn(4, 16, generator=torch.Generator().manual_seed(4)))
        for dims in (1, 2, 3):
            yield (f"conv{dims}d-{kind}", lambda w: QuantizedConv(w, bias, 0.2, 50, True, 1, 1, 1, 2),
                   (8, 4) + (3,) * dims, per_channel, _qinput((2, 8) + (6,) * dims))
            if not per_channel or (engine == "qnnpack" and dims < 3):  # x86 kernels: per-tensor transposed only
                yield (f"conv_transpose{dims}d-{kind}",
                       lambda w: QuantizedConv(w, bias, 0.2, 50, False, 2, 0, 1, 2, transposed=True),
                       (8, 4) + (2,) * dims, per_channel, _qinput((2, 8) + (4,) * dims))


def _same_weight(a, b):
    if a.dtype != b.dtype or a.shape != b.shape or a.qscheme() != b.qscheme():
        return False
    if not torch.equal(a.int_repr(), b.int_repr()):
        return False
    if a.qscheme() == torch.per_channel_affine:
        return (a.q_per_channel_axis() == b.q_per_channel_axis()
                and torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales())
                and torch.equal(a.q_per_channel_zero_points(), b.q_per_channel_zero_points()))
    return a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()


def _holds_one_weight_copy(module):
    """No weight tensor beside the kernel's packed one: the bias is the only tensor the module keeps."""
    tensors = [name for name, value in vars(module).items() if isinstance(value, torch.Tensor)]
    return not tensors and list(dict(module.named_buffers())) == ["bias"]


def _result(module, x):
    with torch.no_grad():
        y = module(x)
    return y.int_repr() if y.is_quantized else y


def _all_cases():
    return [(engine, *case) for engine in ENGINES for case in _cases(engine)]


@pytest.mark.parametrize(("engine", "name", "make", "shape", "per_channel", "x"), _all_cases(),
                         ids=[f"{case[0]}-{case[1]}" for case in _all_cases()])
def test_static_kernel_modules_hold_one_weight_copy_and_round_trip_it_exactly(engine, name, make, shape,
                                                                              per_channel, x, tmp_path):
    with using_engine(engine):
        weight = _weight(shape, per_channel, seed=2)
        module = make(weight)
        assert _same_weight(module.qweight, weight)
        state = module.state_dict()
        assert all(torch.equal(state[key], value) for key, value in weight_state.to_state(weight).items())
        if engine == "qnnpack" and name.startswith("conv") and "3d" in name:
            # qnnpack has no 3-d unpack: the module keeps its weight (and its 3-d transposed kernel is not even
            # deterministic, so outputs are not compared here)
            assert module._kept_weight is weight
            for copied in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
                assert _same_weight(copied.qweight, weight) and copied._kept_weight is not None
            return
        assert _holds_one_weight_copy(module)
        expected = _result(module, x)
        other = make(_weight(shape, per_channel, seed=5))
        other.load_state_dict(state)
        fxq.save(module, tmp_path / "module.fxq")
        for copied in (other, copy.deepcopy(module), pickle.loads(pickle.dumps(module)),
                       fxq.load(tmp_path / "module.fxq")):
            assert _holds_one_weight_copy(copied) and _same_weight(copied.qweight, weight)
            assert torch.equal(_result(copied, x), expected)
            assert all(torch.equal(copied.state_dict()[key], value) for key, value in state.items())
        scripted = torch.jit.freeze(torch.jit.script(copy.deepcopy(module).eval()))
        assert torch.equal(_result(scripted, x), expected)
        module.bias = torch.zeros(8)
        module._repack()  # repacks the packed weight with the new bias
        assert _holds_one_weight_copy(module) and _same_weight(module.qweight, weight)
        fresh = make(weight)
        fresh.bias = torch.zeros(8)
        fresh._repack()
        assert torch.equal(_result(module, x), _result(fresh, x))


def test_a_weight_the_kernel_cannot_give_back_exactly_is_kept():
    """fbgemm keeps float32 scales: a weight whose float64 scales are not float32 values stays with its module."""
    with using_engine("x86"):
        weight = _weight((8, 16), True, seed=2, exact_float32_scales=False)
        module = QuantizedLinear(weight, torch.zeros(8), 0.1, 60, False)
        assert module._kept_weight is weight and module.qweight is weight
        x = _qinput((4, 16))
        for copied in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
            assert _same_weight(copied.qweight, weight) and torch.equal(_result(copied, x), _result(module, x))


def test_a_converted_model_holds_one_copy_of_each_weight(tmp_path):
    native = _convert("resnet", "x86")
    modules = [m for m in native.modules() if isinstance(m, (QuantizedConv, QuantizedLinear))]
    assert modules and all(_holds_one_weight_copy(m) for m in modules)
    x = eval_batches("resnet")[0][0]
    expected = native(x)
    fxq.save(native, tmp_path / "resnet.fxq")
    loaded = fxq.load(tmp_path / "resnet.fxq")
    assert all(_holds_one_weight_copy(m) for m in loaded.modules() if isinstance(m, (QuantizedConv, QuantizedLinear)))
    assert torch.equal(loaded(x), expected)
