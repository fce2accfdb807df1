"""Mappings and qconfigs built with torch.ao itself, handed to fxq: translated, and the result agrees with
torch.ao's own int8 model (skipped where torch.ao is gone)."""

import pytest
import torch

import fxq
from fxq.metrics import sqnr_db
from tests.compat.models import PlainCNN, StubbedCNN, images, trained_like

tq = pytest.importorskip("torch.ao.quantization")
quantize_fx = pytest.importorskip("torch.ao.quantization.quantize_fx")


@pytest.fixture
def engine():
    previous = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = previous


def _both(make, backend, mapping, **fxq_options):
    """torch.ao's and fxq.compat's int8 models of one model, mapping and calibration."""
    from fxq.compat import convert_fx, prepare_fx

    torch.backends.quantized.engine = backend
    model = trained_like(make())
    calibration = [images(8, seed) for seed in range(4)]
    models = []
    for prepare, convert, options in ((quantize_fx.prepare_fx, quantize_fx.convert_fx, {}),
                                      (prepare_fx, convert_fx, fxq_options)):
        prepared = prepare(model, mapping, (images(1, 0),), **options)
        with torch.no_grad():
            for batch in calibration:
                prepared(batch)
        models.append(convert(prepared))
    return model, *models


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("make", [PlainCNN, StubbedCNN])
def test_fxq_compat_and_torch_ao_agree_given_the_same_min_max_qconfig(backend, make, engine):
    qconfig = tq.QConfig(activation=tq.MinMaxObserver.with_args(reduce_range=backend == "x86"),
                         weight=tq.default_per_channel_weight_observer)
    _, ao, ours = _both(make, backend, tq.QConfigMapping().set_global(qconfig), recipe="none")
    x = images(16, 77)
    with torch.no_grad():
        assert sqnr_db(ao(x), ours(x)) >= 40  # measured 43.1 on x86, identical outputs on qnnpack


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_torch_ao_default_mappings_run_through_fxq_compat(backend, engine):
    model, ao, ours = _both(PlainCNN, backend, tq.get_default_qconfig_mapping(backend))
    x = images(16, 77)
    with torch.no_grad():  # histogram observers differ (fxq's searches its own ranges): both near float
        assert sqnr_db(model(x), ours(x)) >= 25 and sqnr_db(model(x), ao(x)) >= 25  # fxq 28.7 / 33.1 measured


@pytest.mark.parametrize("mapping", [lambda: tq.get_default_qconfig_mapping("x86"),
                                     lambda: {"": tq.get_default_qconfig("x86")},
                                     lambda: tq.QConfigMapping().set_global(tq.get_default_qconfig("x86"))
                                     .set_module_name("fc", None)])
def test_fxq_prepare_takes_torch_ao_mappings_and_qconfig_dicts(mapping):
    model = trained_like(PlainCNN())
    prepared = fxq.prepare(model, mapping(), (images(1, 0),), backend="x86")
    prepared(images(8, 1))
    quantized = fxq.convert(prepared)
    with torch.no_grad():
        assert sqnr_db(model(images(8, 2)), quantized(images(8, 2))) >= 25  # 28.1 measured


def test_torch_ao_qat_qconfigs_become_their_observers():
    from fxq.torch_ao_objects import translate_qconfig

    qconfig = translate_qconfig(tq.get_default_qat_qconfig("x86"))
    assert qconfig.activation.cls is fxq.observers.MovingAverageMinMaxObserver
    assert qconfig.weight.cls is fxq.observers.MovingAveragePerChannelMinMaxObserver
    assert qconfig.weight.kwargs["symmetric"] is True
