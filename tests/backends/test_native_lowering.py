"""Native int8 lowering (x86, qnnpack) against the reference backend, on every test model."""

import copy
import io
import warnings

import pytest
import torch
from fxq.tools import bench_models as zoo

import fxq
from fxq.annotation import info
from fxq.errors import FxqWarning
from fxq.nn.quantized import QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput
from tests.models import MODEL_NAMES, calibration_batches, eval_batches, example_inputs, make_model, sqnr


def _prepare(name, backend, mapping_backend="x86"):
    model = make_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(mapping_backend), example_inputs(name),
                               backend=backend)
    with torch.no_grad():
        for batch in calibration_batches(name):
            prepared(*batch)
    return prepared


def _convert(name, backend, mapping_backend="x86"):
    return fxq.convert(_prepare(name, backend, mapping_backend))


def _outputs(model, name):
    with torch.no_grad():
        return torch.cat([model(*batch) for batch in eval_batches(name)])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_x86_matches_reference(name):
    prepared = _prepare(name, "x86")
    reference, native = fxq.convert(prepared, backend="reference"), fxq.convert(prepared)
    db = sqnr(_outputs(reference, name), _outputs(native, name))
    assert db >= 40, f"{name}: x86 vs reference {db:.1f} dB"


@pytest.mark.parametrize("name", ["mlp", "resnet", "mobilenet", "transformer"])
def test_qnnpack_matches_reference_under_the_qnnpack_engine(name):
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        prepared = _prepare(name, "qnnpack", "qnnpack")
        reference, native = fxq.convert(prepared, backend="reference"), fxq.convert(prepared)
        db = sqnr(_outputs(reference, name), _outputs(native, name))
    finally:
        torch.backends.quantized.engine = previous
    assert db >= 40, f"{name}: qnnpack vs reference {db:.1f} dB"


def test_convert_lowers_for_the_prepared_backend_or_reference_only():
    prepared = _prepare("mlp", "x86")
    with pytest.raises(fxq.ConfigError, match="prepared for 'x86'"):
        fxq.convert(prepared, backend="qnnpack")
    assert fxq.convert(prepared, backend="fbgemm") is not None  # an alias of x86


def test_float_values_leave_native_kernels_contiguous():
    native = _convert("mixed", "x86")  # its conv's channels-last output feeds a float mean
    x = eval_batches("mixed")[0][0]
    seen = []
    for node in native.graph.nodes:
        if node.op == "call_method" and node.target == "contiguous":
            seen.append(node)
    assert seen, "expected a layout fix-up after the conv's dequantize"
    with torch.no_grad():
        assert native(x).is_contiguous()


def _resnet18():
    """The benchmark's ResNet-18 itself (with real batch-norm statistics), on a small input to stay fast."""
    model = zoo.warm_batch_norm(zoo.ResNet18(classes=10), (4, 3, 64, 64))
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(1, 3, 64, 64),),
                           backend="x86")
    with torch.no_grad():
        for _ in range(2):
            prepared(torch.randn(2, 3, 64, 64))
    return fxq.convert(prepared)


@pytest.mark.parametrize("make", [lambda: _convert("resnet", "x86"), _resnet18], ids=["resnet", "resnet18"])
def test_resnet_has_one_quantize_one_dequantize_and_no_float_op(make):
    native = make()
    quantizes = [n for n in native.graph.nodes if n.target is torch.quantize_per_tensor]
    dequantizes = [n for n in native.graph.nodes if n.target == "dequantize"]
    assert len(quantizes) == 1 and quantizes[0].args[0].op == "placeholder"
    assert len(dequantizes) == 1
    (head,) = dequantizes[0].users  # the classifier, whose int8 kernel returns the float output
    assert isinstance(native.get_submodule(head.target), QuantizedLinearFloatOutput)
    assert [user.op for user in head.users] == ["output"]
    for node in native.graph.nodes:
        if node.op in ("call_module", "call_function", "call_method") and node not in quantizes + dequantizes:
            assert info(node).float_reason is None, node.format_node()
            assert info(node).lowered_to not in (None, "float") and not info(node).lowered_to.startswith("reference:"), \
                f"{node.name}: {info(node).lowered_to}"


def test_quantized_tensors_flow_between_consecutive_ops():
    native = _convert("mobilenet", "x86")
    modules = dict(native.named_modules())
    convs = [n for n in native.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], QuantizedConv)]
    assert len(convs) == 11  # every conv of the model; batch norms are folded
    for conv in convs:
        assert conv.args[0].target != "dequantize"


def test_ops_without_int8_kernels_stay_float_with_the_reason():
    native = _convert("transformer", "x86")
    act = next(n for n in native.graph.nodes if n.name == "act")
    assert info(act).float_reason == "backend 'x86' has no quantized form of gelu"
    (producer,) = act.all_input_nodes  # read only by the float gelu, the linear's int8 kernel returns float
    assert isinstance(native.get_submodule(producer.target), QuantizedLinearFloatOutput)


def test_runtime_modules_round_trip_copy_and_print():
    native = _convert("mlp", "x86")
    fc1 = native.get_submodule("fc1")
    assert isinstance(fc1, QuantizedLinear) and fc1.relu
    assert "scale=" in repr(fc1) and "zero_point=" in repr(fc1) and "qint8" in repr(fc1)
    x = eval_batches("mlp")[0][0]
    expected = native(x)
    assert torch.equal(copy.deepcopy(native)(x), expected)
    buffer = io.BytesIO()
    torch.save(native.state_dict(), buffer)
    buffer.seek(0)
    other = fxq.convert(_prepare("mlp", "x86", "x86"), runtime="graph")  # (a TorchScript copy would not see this:)
    with torch.no_grad():
        for module in other.modules():  # scramble in place, then restore from the saved state
            if isinstance(module, QuantizedLinear):
                zeros = torch.quantize_per_tensor(torch.zeros(module.qweight.shape), 1.0, 0, torch.qint8)
                module.qweight, module.bias = zeros, torch.zeros_like(module.bias)
                module._repack()
    assert not torch.equal(other(x), expected)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other(x), expected)


def test_weights_are_stored_as_int8():
    model, native = make_model("resnet"), _convert("resnet", "x86")
    float_bytes = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "weight" in name
                      and p.dim() > 1)
    int8 = [m.qweight for m in native.modules()
            if isinstance(m, (QuantizedConv, QuantizedLinear, QuantizedLinearFloatOutput))]
    assert all(q.dtype == torch.qint8 for q in int8)
    assert sum(q.numel() * q.element_size() for q in int8) * 4 == float_bytes


def test_state_dict_stores_weights_compactly_and_reports_missing_ones():
    native = _convert("resnet", "x86")
    state = native.state_dict()
    assert state["conv1.weight_int8"].dtype == torch.int8
    assert state["conv1.weight_scale"].dtype == torch.float32
    assert state["conv1.weight_zero_point"].dtype == torch.int32
    assert not any(key.endswith("qweight") for key in state)
    del state["fc.weight_scale"]
    result = _convert("resnet", "x86").load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc.weight_scale"] and result.unexpected_keys == []
