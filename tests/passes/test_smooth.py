import copy

import pytest
import torch
import torch.nn.functional as F
from fxq.passes.smooth import Smooth
from torch import nn

import fxq
import fxq.api
from fxq.annotation import copy_graph_module, info
from fxq.graph_pass import PassContext
from fxq.metrics import sqnr_db
from fxq.observers import MinMaxObserver, Observer
from fxq.pass_manager import PassManager
from fxq.statistics import ChannelStatistics


@pytest.fixture
def pipeline():
    """prepare (+ record-input-statistics) -> calibrate; convert with or without smoothing prepended."""

    def prepare(model, batches, backend="reference", mapping=None, **options):
        mapping = mapping or fxq.get_default_qconfig_mapping(backend)
        prepared = fxq.prepare(model, mapping, batches[0], backend=backend, recipe="none",
                               passes={"after insert-observers": "record-input-statistics"}, **options)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        return prepared

    def convert(prepared, smooth=True):
        # Nothing after smooth reads the statistics here (bias-correction would remove them): drop them, so
        # native kernels match. The baseline is the same pipeline with smoothing never chosen.
        gain = 3.0 if smooth else float("inf")
        return fxq.convert(prepared, passes={"before lower": Smooth(min_gain_db=gain)})

    return prepare, convert


def _smoothed_float(prepared, backend="reference"):
    """The prepared graph after smooth alone: observers and statistics are identities, so it computes in float."""
    gm = copy_graph_module(prepared, share=[m for m in prepared.modules() if isinstance(m, Observer)])
    return PassManager(["smooth"]).run(gm, PassContext(backend=backend)).graph_module


def _batches(features, seed=1, outliers=(), count=4, shape=(8, 10)):
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(features)
    scale[list(outliers)] = 50.0
    return [(torch.randn(*shape, features, generator=g) * scale,) for _ in range(count)]


def _smoothing(gm):
    return {n.name: info(n).qparams["smoothing"] for n in gm.graph.nodes if "smoothing" in info(n).qparams}


class _Norm(nn.Module):
    """q/k/v after a LayerNorm whose weight makes 3 of 64 channels 50x the rest."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(64)
        self.q, self.k, self.v = nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(64, 32)
        with torch.no_grad():
            self.ln.weight[:3] = 50.0

    def forward(self, x):
        h = self.ln(x)
        return torch.cat([self.q(h), self.k(h), self.v(h)], -1)


class _Gelu(nn.Module):
    """A linear reading gelu(x) for an input with 50x channels (OUTLIERS), which it weighs 50x less: what it
    computes depends on the other channels as much as on them."""

    OUTLIERS = (3, 17, 30)

    def __init__(self):
        super().__init__()
        self.down = nn.Linear(32, 16)
        with torch.no_grad():
            self.down.weight[:, list(self.OUTLIERS)] /= 50

    def forward(self, x):
        return self.down(F.gelu(x))


class _Chain(nn.Module):
    """A linear whose 3 largest output rows feed the next linear alone."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(32, 48), nn.Linear(48, 16)
        with torch.no_grad():
            self.a.weight[:3] *= 50

    def forward(self, x):
        return self.b(self.a(x))


class _Residual(nn.Module):
    """The LayerNorm's output is also the residual: folding 1/s into it would change the add."""

    def __init__(self):
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(32), nn.Linear(32, 32)
        with torch.no_grad():
            self.ln.weight[:3] = 50.0

    def forward(self, x):
        h = self.ln(x)
        return self.fc(h) + h


class _Everything(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.chain, self.residual = _Norm(), _Chain(), _Residual()
        self.gelu = _Gelu()

    def forward(self, x):
        y = self.chain(self.norm(x)[..., :32])
        return self.gelu(self.residual(y.repeat(1, 1, 2)))


def _gelu_float(backend):
    return fxq.get_default_qconfig_mapping(backend).set_object_type(F.gelu, None)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_every_placement_keeps_the_float_function(pipeline, capture):
    prepare, _ = pipeline
    torch.manual_seed(0)
    model = _Everything().eval()
    before = copy.deepcopy(model.state_dict())
    batches = _batches(64, outliers=(5, 9))
    prepared = prepare(model, batches, capture=capture)
    observed = {name: (m.min_val.clone(), m.max_val.clone()) for name, m in prepared.named_modules()
                if isinstance(m, MinMaxObserver)}
    smoothed = _smoothed_float(prepared)
    placements = {name: record["placement"] for name, record in _smoothing(smoothed).items()}
    assert set(placements.values()) == {"layer_norm", "linear", "mul"}, placements
    assert len([p for p in placements.values() if p == "layer_norm"]) == 3  # q, k, v share one s
    assert len({str(r["scale_max"]) for r in _smoothing(smoothed).values() if r["placement"] == "layer_norm"}) == 1
    test = _batches(64, seed=7, outliers=(5, 9), count=1)[0][0]
    with torch.no_grad():
        expected, got = model(test), smoothed(test)
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model
    for name, module in prepared.named_modules():  # and the prepared model's observers
        if isinstance(module, MinMaxObserver):
            assert torch.equal(module.min_val, observed[name][0]) and torch.equal(module.max_val, observed[name][1])


def test_layer_norm_read_by_a_residual_add_is_not_folded(pipeline):
    prepare, _ = pipeline
    torch.manual_seed(0)
    model = _Residual().eval()
    prepared = prepare(model, _batches(32))
    smoothed = _smoothed_float(prepared)
    assert _smoothing(smoothed)["fc"]["placement"] == "mul"
    assert torch.equal(smoothed.ln.weight, model.ln.weight) and torch.equal(smoothed.ln.bias, model.ln.bias)
    add = next(n for n in smoothed.graph.nodes if info(n).concept == "add")
    fc = next(n for n in smoothed.graph.nodes if n.name == "fc")
    ln_observer = info(next(n for n in smoothed.graph.nodes if n.name == "ln")).observers["output"]
    # the add keeps the layer norm's observed value; the linear reads its own division, observed afresh
    assert ln_observer in {a.target for a in add.args if isinstance(a, torch.fx.Node)}
    assert info(fc).observers["input0"] != ln_observer
    mul = next(n for n in smoothed.graph.nodes if n.target is torch.mul)
    assert mul.args[0].name == "ln"  # divides the exact float value, not its int8 rounding
    ranged = smoothed.get_submodule(info(fc).observers["input0"])
    stats = smoothed.get_submodule(info(fc).statistics["input0"])
    assert torch.allclose(ranged.min_val.double(), stats.minimum.min()) and \
        torch.allclose(ranged.max_val.double(), stats.maximum.max())


@pytest.mark.parametrize("backend", ["reference", "x86"])
@pytest.mark.parametrize("case", ["layer_norm", "linear", "mul"])
def test_outlier_channels_quantize_clearly_better(pipeline, backend, case):
    prepare, convert = pipeline
    torch.manual_seed(0)
    model, features, outliers, mapping = {
        "layer_norm": (_Norm, 64, (), None),
        "linear": (_Chain, 32, (), None),
        "mul": (_Gelu, 32, _Gelu.OUTLIERS, _gelu_float(backend)),
    }[case]
    model = model().eval()
    batches = _batches(features, outliers=outliers)
    test = _batches(features, seed=9, outliers=outliers, count=1)[0][0]
    prepared = prepare(model, batches, backend, mapping)
    plain, smoothed = convert(prepared, smooth=False), convert(prepared)
    with torch.no_grad():
        gain = sqnr_db(model(test), smoothed(test)) - sqnr_db(model(test), plain(test))
    assert gain > 3, gain
    assert {r["placement"] for r in _smoothing(smoothed).values()} == {case}
    assert all(0 <= r["alpha"] <= 1 and 0 < r["scale_min"] < r["scale_max"] for r in _smoothing(smoothed).values())
    for node in smoothed.graph.nodes:
        if "smoothing" in info(node).qparams:
            assert any(s.pass_name == "smooth" and "alpha" in s.rule for s in info(node).history)
            if backend == "x86":
                assert info(node).lowered_to in ("QuantizedLinear", "QuantizedLinearFloatOutput")
    assert not any(isinstance(m, ChannelStatistics) for m in smoothed.modules())


def test_inputs_without_outliers_are_left_alone(pipeline):
    prepare, convert = pipeline
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    prepared = prepare(model, _batches(32))
    converted = convert(prepared)
    assert not _smoothing(converted)
    for node in converted.graph.nodes:
        if info(node).concept in ("linear", "linear_relu"):
            reasons = [reason for rule, reason in info(node).declined if rule == "smooth"]
            assert reasons and "no smoothing factor lowers" in reasons[0] and "unsmoothed" in reasons[0]
    assert not any(n.target is torch.mul for n in converted.graph.nodes)


def test_statistics_follow_the_division_for_bias_correction(pipeline):
    prepare, _ = pipeline
    torch.manual_seed(0)
    model = _Gelu().eval()
    prepared = prepare(model, _batches(32, outliers=(3,)), mapping=_gelu_float("reference"))
    smoothed = _smoothed_float(prepared)
    down = next(n for n in smoothed.graph.nodes if n.name == "down")
    old = prepared.get_submodule(info(next(n for n in prepared.graph.nodes if n.name == "down")).statistics["input0"])
    new = smoothed.get_submodule(info(down).statistics["input0"])
    s = smoothed.get_submodule("").get_buffer(next(n for n in smoothed.graph.nodes if n.target is torch.mul).args[1]
                                              .target).reciprocal().double()
    assert torch.allclose(new.mean, old.mean / s) and torch.allclose(new.second_moment, old.second_moment / s ** 2)
    # bias correction after smoothing reads the smoothed input's mean
    corrected = PassManager(["bias-correction"]).run(smoothed, PassContext()).graph_module
    assert "bias_correction" in info(next(n for n in corrected.graph.nodes if n.name == "down")).qparams


def test_declines_a_per_channel_input_observer(pipeline):
    prepare, _ = pipeline
    torch.manual_seed(0)
    model = _Gelu().eval()
    qconfig = fxq.QConfig(activation=fxq.observers.PerChannelMinMaxObserver.with_args(ch_axis=-1),
                          weight=fxq.get_default_qconfig("x86").weight)
    mapping = _gelu_float("reference").set_object_type(nn.Linear, qconfig)
    try:
        prepared = prepare(model, _batches(32, outliers=(3,)), mapping=mapping)
    except fxq.FxqError:
        pytest.skip("per-channel activation observers are refused before smoothing")
    smoothed = _smoothed_float(prepared)
    down = next(n for n in smoothed.graph.nodes if n.name == "down")
    assert any(rule == "smooth" and "per channel" in reason for rule, reason in info(down).declined)


def test_shared_parameters_of_another_call_site_are_untouched(pipeline):
    prepare, _ = pipeline

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x, y):
            return self.fc(F.gelu(x)) + self.fc(y)

    torch.manual_seed(0)
    model = Twice().eval()
    g = torch.Generator().manual_seed(1)
    scale = torch.ones(16)
    scale[2] = 50.0
    batches = [(torch.randn(8, 16, generator=g) * scale, torch.randn(8, 16, generator=g)) for _ in range(4)]
    prepared = prepare(model, batches, mapping=_gelu_float("reference"))
    smoothed = _smoothed_float(prepared)
    records = _smoothing(smoothed)
    assert list(records) == ["fc"], records
    call2 = next(n for n in smoothed.graph.nodes if n.op == "call_module" and n.target.startswith("fc_call"))
    assert torch.equal(smoothed.get_submodule(call2.target).weight, model.fc.weight)
    assert not torch.equal(smoothed.fc.weight, model.fc.weight)
    with torch.no_grad():
        x, y = batches[0]
        assert torch.allclose(smoothed(x, y), model(x, y), rtol=1e-5, atol=1e-4)
