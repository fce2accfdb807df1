"""torch.ao tutorial snippets run with only the import line changed to ``fxq.compat``."""

import pytest
import torch
from torch import nn

import fxq
from fxq.metrics import sqnr_db
from tests.compat.models import PlainCNN, StubbedCNN, images, trained_like


@pytest.fixture
def engine():
    previous = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = previous


def _lowered_kinds(quantized) -> set:
    return {fxq.info(node).lowered_to for node in quantized.graph.nodes if fxq.info(node).lowered_to}


def test_eager_static_ptq_with_quant_stubs_and_fuse_modules():
    from fxq.compat import convert, fuse_modules, get_default_qconfig, prepare  # was: torch.ao.quantization

    model = trained_like(StubbedCNN())
    model.qconfig = get_default_qconfig("fbgemm")
    fused = fuse_modules(model, [["conv", "bn", "relu"]])
    prepared = prepare(fused)
    for seed in range(4):
        prepared(images(8, seed))
    quantized = convert(prepared)
    x = images(8, 50)
    with torch.no_grad():
        assert sqnr_db(model(x), quantized(x)) >= 30
    kinds = {type(module).__name__ for module in quantized.modules()}
    assert {"QuantizedConv", "QuantizedLinear"} <= kinds or {"QuantizedConv", "QuantizedLinearFloatOutput"} <= kinds
    assert isinstance(model.bn, nn.BatchNorm2d)  # fuse_modules worked on a copy


def test_fx_prepare_and_convert_with_the_qnnpack_mapping(engine):
    from fxq.compat import convert_fx, get_default_qconfig_mapping, prepare_fx

    torch.backends.quantized.engine = "qnnpack"
    model = trained_like(PlainCNN())
    qconfig_mapping = get_default_qconfig_mapping("qnnpack")
    prepared = prepare_fx(model, qconfig_mapping, (images(1, 0),))
    for seed in range(4):
        prepared(images(8, seed))
    quantized = convert_fx(prepared)
    assert quantized.meta["fxq_backend"] == "qnnpack"
    with torch.no_grad():
        assert sqnr_db(model(images(8, 50)), quantized(images(8, 50))) >= 30


def test_per_type_and_per_name_rules_keep_those_layers_float():
    from fxq.compat import QConfigMapping, convert_fx, get_default_qconfig, prepare_fx

    model = trained_like(PlainCNN())
    qconfig_mapping = (QConfigMapping().set_global(get_default_qconfig("x86"))
                       .set_object_type(nn.Linear, None).set_module_name("conv2", None))
    prepared = prepare_fx(model, qconfig_mapping, (images(1, 0),))
    prepared(images(8, 1))
    quantized = convert_fx(prepared)
    kinds = {name: type(module) for name, module in quantized.named_modules()}
    assert kinds["conv2"] is nn.Conv2d and kinds["fc"] is nn.Linear  # the rules' layers stay float
    assert kinds["conv1"].__name__ == "QuantizedConv"


def test_qat_with_the_default_qat_qconfig():
    from fxq.compat import QConfigMapping, convert_fx, get_default_qat_qconfig, prepare_qat_fx

    model = trained_like(PlainCNN()).train()
    prepared = prepare_qat_fx(model, QConfigMapping().set_global(get_default_qat_qconfig("x86")), (images(1, 0),))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3)
    for seed in range(3):
        loss = prepared(images(8, seed)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quantized = convert_fx(prepared.eval())
    assert quantized(images(2, 9)).shape == (2, 10) and _lowered_kinds(quantized)


def test_observers_take_torch_ao_qscheme_and_names_build_the_same_qconfigs():
    from fxq.compat import (
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        default_per_channel_weight_observer,
    )

    per_channel = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    assert per_channel == fxq.observers.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True)
    assert default_per_channel_weight_observer == per_channel
    qconfig = QConfig(activation=MinMaxObserver, weight=PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric))
    assert qconfig.activation == fxq.observers.MinMaxObserver.with_args()
    with pytest.raises(fxq.ConfigError, match="does not take"):
        MinMaxObserver.with_args(bins=4)


@pytest.mark.parametrize("call, message", [
    (lambda c, m: c.prepare(m, inplace=True), "never changes the model"),
    (lambda c, m: c.convert(c.prepare(_with_qconfig(m))), "never ran"),
    (lambda c, m: c.prepare(m), "has no qconfig attribute"),
    (lambda c, m: c.fuse_modules(m, [["conv1", "relu2"]]), "did you mean 'relu1'"),
    (lambda c, m: c.fuse_modules(m, [["fc", "conv1"]]), "cannot fuse"),
    (lambda c, m: c.convert_fx(c.prepare_fx(m, c.get_default_qconfig_mapping(), (images(1, 0),)),
                               qconfig_mapping=c.QConfigMapping()), "pass the mapping to prepare_fx"),
    (lambda c, m: c.prepare_fx(m, c.get_default_qconfig_mapping(), (images(1, 0),),
                               prepare_custom_config={"standalone_module_name": []}), "does not take"),
    (lambda c, m: fxq.prepare(m, fxq.get_default_qconfig_mapping(), ()), "example_inputs is empty"),
])
def test_what_fxq_cannot_honour_is_a_clear_error(call, message):
    import fxq.compat as compat

    with pytest.raises(fxq.FxqError, match=message):
        call(compat, trained_like(PlainCNN()))


def _with_qconfig(model):
    from fxq.compat import get_default_qconfig

    model.qconfig = get_default_qconfig("x86")
    return model


def test_fuse_fx_gives_the_fused_float_graph_and_leaves_the_model_alone():
    from fxq.compat import fuse_fx

    model = trained_like(StubbedCNN())
    fused = fuse_fx(model)
    kinds = {type(module).__name__ for module in fused.modules()}
    assert "ConvReLU2d" in kinds and "BatchNorm2d" not in kinds  # the norm folded into the conv
    assert isinstance(model.bn, nn.BatchNorm2d)
    x = images(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_float16_static_qconfig_gets_fp16_weights_on_the_fp16_kernel():
    from fxq.compat import (
        PlaceholderObserver,
        QConfig,
        QConfigMapping,
        convert_fx,
        get_default_qconfig,
        prepare_fx,
    )

    float16_static_qconfig = QConfig(activation=PlaceholderObserver.with_args(dtype=torch.float16),
                                     weight=PlaceholderObserver.with_args(dtype=torch.float16))
    model = trained_like(PlainCNN())
    qconfig_mapping = QConfigMapping().set_global(get_default_qconfig("x86")).set_object_type(
        nn.Linear, float16_static_qconfig)
    prepared = prepare_fx(model, qconfig_mapping, (images(1, 0),))
    prepared(images(8, 1))
    quantized = convert_fx(prepared)
    assert quantized.fc.fp16  # fp16 weights; no CPU kernel takes float16 activations (docs/migrating.md)
    with torch.no_grad():
        assert sqnr_db(model(images(8, 2)), quantized(images(8, 2))) >= 25
