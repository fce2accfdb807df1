import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.annotation import info
from fxq.backends import native
from fxq.clamp_bounds import clamp_bounds
from fxq.metrics import sqnr_db
from fxq.observers.base import Observer
from fxq.ops import concept_of
from fxq.pipelines import PREPARE
from fxq.qat import reestimate_bn_stats
from fxq.qat.fake_quantize import FakeQuantize
from tests.passes.helpers import traced

WITHOUT_PASS = {"prepare": ",".join([*(n for n in PREPARE if n != "observe-clamped"), "record-calibration-sample"])}


class Block(nn.Module):
    """conv + BN -> ReLU6, twice: BN shifts the conv outputs well below 0, where ReLU6 cuts them."""

    def __init__(self, clamp=nn.ReLU6):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), clamp()
        self.conv2, self.act2 = nn.Conv2d(8, 8, 1), clamp()
        with torch.no_grad():
            self.bn1.running_mean.uniform_(0.5, 1.5)
            self.bn1.running_var.uniform_(0.05, 0.2)

    def forward(self, x):
        return self.act2(self.conv2(self.act1(self.bn1(self.conv1(x)))))


class ConvThen(nn.Module):
    """A conv whose output reaches a clamp and another reader: ``after`` maps the conv's output to the result."""

    def __init__(self, after):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.after = nn.Conv2d(3, 8, 3), after

    def forward(self, x):
        return self.after(self.conv(x))


def two_readers(y):
    return F.relu6(y) + y


def shared_before_the_clamp(y):
    """The clamp reads a flatten, which shares the conv's observer with the conv's other readers."""
    return torch.relu(torch.flatten(y, 1)), y


def _batches(n=6):
    torch.manual_seed(1)
    return [(torch.randn(2, 3, 8, 8),) for _ in range(n)]


def _quantized(model, backend="x86", **kwargs):
    batches = _batches()
    return fxq.quantize(model.eval(), batches[0], batches, backend=backend, recipe="none", runtime="graph", **kwargs)


def _observers(model) -> list[Observer]:
    return [m for m in model.modules() if isinstance(m, Observer)]


def test_clamped_values_are_observed_clamped_and_the_clamp_is_gone_after_lowering():
    model, batches = Block(), _batches()
    prepared = fxq.prepare(model.eval(), fxq.get_default_qconfig_mapping("x86"), batches[0], backend="x86",
                           recipe="none")
    clamped = [o for o in _observers(prepared) if o.clamp_to is not None]
    assert [o.clamp_to for o in clamped] == [(0.0, 6.0), (0.0, 6.0)]
    for batch in batches:
        prepared(*batch)
    assert all(float(o.min_val) == 0.0 and float(o.max_val) <= 6.0 for o in clamped)
    with torch.no_grad():
        unclamped = model.bn1(model.conv1(batches[0][0]))
    assert float(unclamped.min()) < -1.0  # what the observer would have spent levels on
    converted = fxq.convert(prepared)
    concepts = [info(n).concept for n in converted.graph.nodes if n.op in ("call_module", "call_function")]
    assert "relu6" not in concepts and concepts.count("conv2d") == 2
    conv = next(n for n in converted.graph.nodes if info(n).concept == "conv2d")
    assert info(conv).origin == "act1" and "act1" in info(conv).fused_from  # compare reads it as the ReLU6's value


def test_the_clamped_observation_lowers_the_error():
    x = _batches()[0][0]
    model = Block().eval()
    with_pass, without = _quantized(model), _quantized(model, passes=WITHOUT_PASS)
    reference = model(x)
    assert with_pass.conv1.scale * 2 < without.conv1.scale  # the same 256 levels over [0, 6] instead of [-a, b]
    assert sum(info(n).concept == "relu6" for n in without.graph.nodes) == 2  # levels below 0: the clamp runs
    assert sqnr_db(reference, with_pass(x)) > sqnr_db(reference, without(x)) + 1.0


def test_dropping_the_saturated_clamp_changes_no_output(monkeypatch):
    x = _batches()[0][0]
    model = Block().eval()
    dropped = _quantized(model)
    monkeypatch.setattr(native, "_levels_inside", lambda *args: False)  # every clamp kept, run on int8
    kept = _quantized(model)
    assert sum(info(n).concept == "relu6" for n in kept.graph.nodes) == 2
    assert torch.equal(dropped(x), kept(x))


def test_qnnpack_computes_what_the_reference_backend_computes():
    """qnnpack has no int8 relu6: it runs in float between the clamped int8 values, as the reference does."""
    x = _batches()[0][0]
    model = Block().eval()
    assert torch.equal(_quantized(model, "qnnpack")(x), _quantized(model, "reference")(x))


@pytest.mark.parametrize("clamp", [lambda: nn.Hardtanh(0.0, 4.0), nn.ReLU])
def test_other_clamps_from_zero_are_observed_clamped_too(clamp):
    prepared = fxq.prepare(NormThenClamp(clamp).eval(), fxq.get_default_qconfig_mapping("x86"),
                           _batches()[0], backend="x86", recipe="none")
    assert [o.clamp_to for o in _observers(prepared) if o.clamp_to is not None] == [clamp_bounds_of(clamp())]


class NormThenClamp(nn.Module):
    """A layer norm (no fusion with the clamp after it) read by the clamp alone."""

    def __init__(self, clamp):
        super().__init__()
        self.norm, self.act, self.fc = nn.LayerNorm(8), clamp(), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.act(self.norm(x)))


def clamp_bounds_of(module) -> tuple[float, float]:
    return (0.0, math.inf) if isinstance(module, nn.ReLU) else (float(module.min_val), float(module.max_val))


def test_left_alone_where_another_op_reads_the_value_or_the_low_bound_is_not_zero():
    batches = _batches()
    mapping = fxq.get_default_qconfig_mapping("x86")
    for model in (ConvThen(two_readers), ConvThen(shared_before_the_clamp)):
        shared = fxq.prepare(model.eval(), mapping, batches[0], backend="x86", recipe="none")
        assert all(o.clamp_to is None for o in _observers(shared))
    symmetric_clip = fxq.prepare(Block(lambda: nn.Hardtanh(-1.0, 1.0)).eval(), mapping, batches[0], backend="x86",
                                 recipe="none")
    assert all(o.clamp_to is None for o in _observers(symmetric_clip))
    converted = _quantized(ConvThen(two_readers))
    assert sqnr_db(ConvThen(two_readers).eval()(batches[0][0]), converted(batches[0][0])) > 25.0


def test_narrower_activation_levels_keep_the_clamp():
    """4-bit activations in quint8: the kernel saturates at 255, not at level 15, so the ReLU6 must stay."""
    qconfig = fxq.QConfig(activation=fxq.observers.MinMaxObserver.with_args(quant_min=0, quant_max=15),
                          weight=fxq.get_default_qconfig_mapping("x86").global_qconfig.weight)
    mapping = fxq.QConfigMapping().set_global(qconfig)
    batches = _batches()
    prepared = fxq.prepare(Block().eval(), mapping, batches[0], backend="x86", recipe="none")
    assert all(o.clamp_to is None for o in _observers(prepared))


def test_quantization_aware_training_observes_clamped_and_converts_to_what_it_trained():
    """The same placement in QAT: the fake quantizer before each ReLU6 starts from the clamped values (zero point
    0), and the converted model computes what the fake-quantized one does."""
    batches = _batches()
    prepared = fxq.prepare_qat(Block().train(), None, batches[0], backend="x86")
    quantizers = [m for m in prepared.modules() if isinstance(m, FakeQuantize) and m.observer.clamp_to is not None]
    assert [q.clamp_to for q in quantizers] == [(0.0, 6.0), (0.0, 6.0)]
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3)
    for (x,) in batches:
        prepared(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(int(q.zero_point) == 0 for q in quantizers)
    reestimate_bn_stats(prepared)  # what convert does: the prepared model then has the converted one's statistics
    prepared.eval()
    x = batches[0][0]
    converted = fxq.convert(prepared)
    assert not any(info(n).concept == "relu6" for n in converted.graph.nodes)  # the learned grids stayed in [0, 6]
    assert info(converted.graph.find_nodes(op="call_module", target="conv1")[0]).qparams["output"]["clamped_to"] \
        == [0.0, 6.0]
    with torch.no_grad():
        assert sqnr_db(prepared(x), converted(x)) > 35.0


def test_a_saved_prepared_model_keeps_the_clamp(tmp_path):
    batches = _batches()
    prepared = fxq.prepare(Block().eval(), fxq.get_default_qconfig_mapping("x86"), batches[0], backend="x86",
                           recipe="none")
    fxq.save(prepared, tmp_path / "prepared.fxq")
    loaded = fxq.load(tmp_path / "prepared.fxq")
    assert [o.clamp_to for o in _observers(loaded) if o.clamp_to is not None] == [(0.0, 6.0), (0.0, 6.0)]


@pytest.mark.parametrize(("call", "bounds"), [
    (lambda x: F.relu6(x), (0.0, 6.0)),
    (lambda x: torch.relu(x), (0.0, math.inf)),
    (lambda x: F.hardtanh(x), (-1.0, 1.0)),
    (lambda x: F.hardtanh(x, 0.0, 3.0), (0.0, 3.0)),
    (lambda x: torch.clamp(x, min=0.0), (0.0, math.inf)),
    (lambda x: torch.clamp(x, 0, 2), (0.0, 2.0)),
    (lambda x: x.clamp(max=1.5), (-math.inf, 1.5)),
    (lambda x: torch.clamp(x, x.mean(), 1.0), None),
])
def test_clamp_bounds_reads_each_spelling(call, bounds):
    class Clamp(nn.Module):
        def forward(self, x):
            return call(x)

    gm = traced(Clamp())
    modules = dict(gm.named_modules())
    node = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")][-1]
    info(node).concept = concept_of(node, modules)
    assert clamp_bounds(node, modules) == bounds
