"""Mappings and qconfigs built with torch.ao itself, handed to fxq: translated, and the result agrees with
torch.ao's own int8 model; torch.ao's HistogramObserver against the observer its name maps to (skipped where
torch.ao is gone)."""

import warnings

import pytest
import torch

import fxq
from fxq.compat import convert_fx, prepare_fx
from fxq.metrics import sqnr_db
from fxq.observers import GreedyHistogramObserver
from tests.compat.models import PlainCNN, StubbedCNN, images, trained_like

tq = pytest.importorskip("torch.ao.quantization")
quantize_fx = pytest.importorskip("torch.ao.quantization.quantize_fx")


@pytest.fixture
def engine():
    previous = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = previous


def _model(make, backend):
    torch.backends.quantized.engine = backend
    torch.manual_seed(0)  # the biases keep their default initialisation, from torch's global generator
    return trained_like(make())


def _quantized(prepare, convert, model, mapping, **options):
    """``model`` prepared with ``mapping``, calibrated on four batches and converted."""
    prepared = prepare(model, mapping, (images(1, 0),), **options)
    with torch.no_grad():
        for seed in range(4):
            prepared(images(8, seed))
    return convert(prepared)


def _min_max_mapping(backend):
    return tq.QConfigMapping().set_global(tq.QConfig(
        activation=tq.MinMaxObserver.with_args(reduce_range=backend == "x86"),
        weight=tq.default_per_channel_weight_observer))


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("make", [PlainCNN, StubbedCNN])
@pytest.mark.parametrize("mapping", [_min_max_mapping, tq.get_default_qconfig_mapping], ids=["min-max", "default"])
def test_fxq_compat_and_torch_ao_agree_given_the_same_mapping(mapping, backend, make, engine):
    model = _model(make, backend)
    ao = _quantized(quantize_fx.prepare_fx, quantize_fx.convert_fx, model, mapping(backend))
    ours = _quantized(prepare_fx, convert_fx, model, mapping(backend))  # compat's default: torch.ao's pipeline
    x = images(16, 77)
    with torch.no_grad():  # identical outputs on qnnpack; x86 measured 42.4-43.9 dB, fxq's last linear returning
        assert sqnr_db(ao(x), ours(x)) >= 40  # float where torch.ao requantizes to 7 bits and dequantizes


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_fxq_compat_applies_fxq_recipes_when_asked(backend, engine):
    model = _model(PlainCNN, backend)
    ours = _quantized(prepare_fx, convert_fx, model, tq.get_default_qconfig_mapping(backend), recipe="auto")
    x = images(16, 77)
    with torch.no_grad():  # bias correction on: not torch.ao's model (28.2 / 32.9 dB from it), as near float
        assert sqnr_db(model(x), ours(x)) >= 25  # 27.0 (x86) / 32.9 measured; torch.ao's 26.4 / 32.4


@pytest.mark.parametrize("mapping", [lambda: tq.get_default_qconfig_mapping("x86"),
                                     lambda: {"": tq.get_default_qconfig("x86")},
                                     lambda: tq.QConfigMapping().set_global(tq.get_default_qconfig("x86"))
                                     .set_module_name("fc", None)])
def test_fxq_prepare_takes_torch_ao_mappings_and_qconfig_dicts(mapping, engine):
    model = _model(PlainCNN, "x86")
    prepared = fxq.prepare(model, mapping(), (images(1, 0),), backend="x86")
    prepared(images(8, 1))
    quantized = fxq.convert(prepared)
    with torch.no_grad():
        assert sqnr_db(model(images(8, 2)), quantized(images(8, 2))) >= 25  # 26.0 measured


def test_torch_ao_qat_qconfigs_become_their_observers():
    from fxq.torch_ao_objects import translate_qconfig

    qconfig = translate_qconfig(tq.get_default_qat_qconfig("x86"))
    assert qconfig.activation.cls is fxq.observers.MovingAverageMinMaxObserver
    assert qconfig.weight.cls is fxq.observers.MovingAveragePerChannelMinMaxObserver
    assert qconfig.weight.kwargs["symmetric"] is True


def test_torch_aos_histogram_observers_become_greedy_ones():
    from fxq.torch_ao_objects import translate_observer, translate_qconfig

    fake_quantize = tq.FakeQuantize.with_args(observer=tq.HistogramObserver, quant_min=0, quant_max=127)
    assert translate_qconfig(tq.get_default_qconfig("x86")).activation.kwargs["reduce_range"] is True
    for factory in (tq.HistogramObserver, tq.get_default_qconfig("x86").activation, fake_quantize):
        assert translate_observer(factory).cls is GreedyHistogramObserver


def _distribution(name):
    generator = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=generator)

    return {
        "normal": lambda: [normal(4096)],
        "one-sided": lambda: [normal(4096).relu()],
        "negative": lambda: [-normal(4096).abs()],
        "skewed": lambda: [normal(4096).exp()],
        "heavy-tailed": lambda: [normal(4096) / normal(4096).abs().clamp(min=0.05)],
        "constant": lambda: [torch.full((64,), 2.5)],
        "zeros": lambda: [torch.zeros(64)],
        "constant, then a spread": lambda: [torch.full((64,), 2.5), normal(4096)],
        "growing range": lambda: [normal(3000) * (1 + i) + i for i in range(4)],
        "activations": lambda: [normal(8, 16, 16, 16) * 3 for _ in range(4)],
    }[name]()


@pytest.mark.parametrize("settings", [{}, {"reduce_range": True},
                                      {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8}], ids=str)
@pytest.mark.parametrize("name", ["normal", "one-sided", "negative", "skewed", "heavy-tailed", "constant", "zeros",
                                  "constant, then a spread", "growing range", "activations"])
def test_greedy_histogram_qparams_equal_torch_aos_histogram_observer(name, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's reduce_range deprecation notice
        theirs = tq.HistogramObserver(**settings)
    ours = GreedyHistogramObserver(**{key: value for key, value in settings.items() if key != "qscheme"},
                                   symmetric="qscheme" in settings)
    for batch in _distribution(name):
        theirs(batch)
        ours(batch)
    assert torch.allclose(ours.histogram.float(), theirs.histogram)
    scale, zero_point = ours.calculate_qparams()
    their_scale, their_zero_point = theirs.calculate_qparams()
    assert torch.equal(scale, their_scale) and torch.equal(zero_point, their_zero_point.long())


class _Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)

    def forward(self, ids):
        return self.embed(ids).mean(1)


@pytest.mark.parametrize("source", ["torch.ao", "fxq.compat"])
def test_the_weight_only_embedding_qconfig_stores_rows_as_torch_ao_does(source):
    import fxq.compat
    from fxq.nn.quantized.embedding import QuantizedEmbedding

    torch.manual_seed(0)
    model, ids = _Bag().eval(), torch.randint(0, 50, (4, 7))
    qconfig = (tq if source == "torch.ao" else fxq.compat).float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = quantize_fx.convert_fx(quantize_fx.prepare_fx(
            model, tq.QConfigMapping().set_object_type(torch.nn.Embedding, tq.float_qparams_weight_only_qconfig),
            (ids,)))
    ours = convert_fx(prepare_fx(model, fxq.compat.QConfigMapping().set_object_type(torch.nn.Embedding, qconfig),
                                 (ids,)))
    assert isinstance(ours.get_submodule("embed"), QuantizedEmbedding) and ours.get_submodule("embed").bits == 8
    assert sqnr_db(model(ids), ours(ids)) >= 40
    assert sqnr_db(ao(ids), ours(ids)) >= 80  # the same rows: a scale and offset from each row's min and max
