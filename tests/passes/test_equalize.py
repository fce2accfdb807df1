import copy

import pytest
import torch
from fxq.passes.equalize import _input_ranges, _layer, _output_ranges
from torch import nn

import fxq
import fxq.api
from fxq.annotation import info
from fxq.errors import PassOrderError
from fxq.graph_pass import PassContext
from fxq.metrics import sqnr_db
from fxq.observers import MinMaxObserver
from fxq.tracing import trace
from tests.passes.helpers import run, traced


def _spread(layer: nn.Module, low: float, high: float) -> nn.Module:
    """Scale ``layer``'s output channels from ``low`` to ``high``: the ranges equalization has to balance."""
    with torch.no_grad():
        factor = torch.logspace(torch.tensor(low).log10(), torch.tensor(high).log10(), layer.weight.shape[0],
                                dtype=layer.weight.dtype)
        layer.weight.mul_(factor.reshape(-1, *[1] * (layer.weight.dim() - 1)))
        if layer.bias is not None:
            layer.bias.mul_(factor)
    return layer


def _equalized(model: nn.Module) -> torch.fx.GraphModule:
    return run(traced(model), "normalize", "fuse", "equalize")


def _stamps(gm) -> dict[str, list[str]]:
    return {n.name: [s.rule for s in info(n).history if s.pass_name == "equalize"] for n in gm.graph.nodes
            if any(s.pass_name == "equalize" for s in info(n).history)}


def _declined(gm) -> list[str]:
    return [reason for n in gm.graph.nodes for rule, reason in info(n).declined if rule == "equalize"]


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


CHAINS = {
    "conv-relu-conv": (lambda: nn.Sequential(_spread(nn.Conv2d(3, 8, 3, padding=1), 0.01, 10), nn.ReLU(),
                                             nn.Conv2d(8, 5, 3, padding=1, padding_mode="reflect")), (2, 3, 9, 9)),
    "depthwise-pointwise": (lambda: nn.Sequential(_spread(nn.Conv2d(6, 6, 3, groups=6), 0.01, 10), nn.ReLU(),
                                                  nn.Conv2d(6, 4, 1)), (2, 6, 9, 9)),
    "pointwise-depthwise-pointwise": (lambda: nn.Sequential(
        _spread(nn.Conv2d(4, 8, 1), 0.01, 10), nn.ReLU(),
        _spread(nn.Conv2d(8, 8, 3, groups=8, padding=1, padding_mode="replicate"), 10, 0.01), nn.ReLU(),
        nn.Conv2d(8, 4, 1)), (2, 4, 7, 7)),
    "linear-relu-linear": (lambda: nn.Sequential(_spread(nn.Linear(7, 12), 0.01, 10), nn.ReLU(), nn.Linear(12, 3)),
                           (4, 5, 7)),
    "grouped chain through pools": (lambda: nn.Sequential(
        _spread(nn.Conv1d(4, 8, 3, groups=2), 0.01, 10), nn.LeakyReLU(0.1), nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 3, groups=4, padding=1, padding_mode="circular"), nn.ReLU(), nn.AvgPool1d(2),
        nn.Conv1d(8, 6, 1, groups=2)), (3, 4, 20)),
}


@pytest.mark.parametrize("name", CHAINS)
def test_float_function_is_preserved_and_every_layer_is_rescaled(name):
    make, shape = CHAINS[name]
    torch.manual_seed(0)
    model = make().double().eval()
    gm = _equalized(model)
    x = torch.randn(shape, dtype=torch.float64)
    assert _relative_error(gm(x), model(x)) <= 1e-12
    layers = [n for n in gm.graph.nodes if n.op == "call_module"
              and _layer(n, dict(gm.named_modules())) is not None]
    assert set(_stamps(gm)) == {n.name for n in layers}
    assert not _declined(gm)
    first = next(iter(_stamps(gm).values()))[0]
    assert first.startswith("output channels / s for ") and " s " in first


def test_a_pair_ends_with_matching_channel_ranges_in_float32():
    torch.manual_seed(0)
    model = CHAINS["depthwise-pointwise"][0]().eval()
    gm = _equalized(model)
    modules = dict(gm.named_modules())
    first, second = [_layer(n, modules) for n in gm.graph.nodes if n.op == "call_module"]
    before = [_output_ranges(model[0]), _input_ranges(model[2])]
    assert (before[0] / before[1]).max() / (before[0] / before[1]).min() > 100  # something to balance
    assert torch.allclose(_output_ranges(first), _input_ranges(second), rtol=1e-5)
    x = torch.randn(2, 6, 9, 9)
    assert _relative_error(gm(x), model(x)) <= 1e-5


class _Branches(nn.Module):
    def __init__(self, between: nn.Module | None = None, shared: bool = False):
        super().__init__()
        self.conv1 = _spread(nn.Conv2d(3, 8, 1), 0.01, 10)
        self.between = between or nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.shared = shared

    def forward(self, x):
        y = self.conv1(x)
        out = self.conv2(self.between(y))
        return out + y if self.shared else out


@pytest.mark.parametrize("model, reason", [
    (nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1)), None),
    (nn.Sequential(nn.Conv2d(3, 8, 1), nn.Flatten(), nn.Linear(8 * 25, 4)),
     "_1 (flatten) between _0 and _2: equalize sees only through ops that keep channel i in channel i"),
    (_Branches(shared=True), "conv1's output has 2 users (between, add): rescaling its channels would change"),
    (_Branches(nn.Sigmoid()), "between (sigmoid) between conv1 and conv2 is not positively homogeneous"),
    (_Branches(nn.ReLU6()), "between (relu6) between conv1 and conv2 is not positively homogeneous"),
    (_Branches(nn.Hardtanh(0.0, 1.0)), "between (hardtanh) between conv1 and conv2 is not positively homogeneous"),
])
def test_what_cannot_be_equalized_exactly_is_left_unchanged_with_the_reason(model, reason):
    model = model.eval()
    fused = run(traced(model), "normalize", "fuse")
    expected = copy.deepcopy(fused.state_dict())
    gm = run(fused, "equalize")
    assert not _stamps(gm)
    assert all(torch.equal(value, expected[key]) for key, value in gm.state_dict().items())
    if reason is None:
        assert not _declined(gm)
    else:
        assert any(reason in text for text in _declined(gm)), _declined(gm)


def test_the_users_model_and_shared_parameters_are_not_written():
    """A GraphModule traced without a copy holds the model's own modules: equalize must rescale copies."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = _spread(nn.Linear(6, 10), 0.01, 10)
            self.fc2 = nn.Linear(10, 6)

        def forward(self, x):
            x = self.fc2(torch.relu(self.fc1(x)))
            return self.fc1(x)  # a second call of fc1, with nothing after it to balance against

    torch.manual_seed(0)
    model = Twice().eval()
    before = copy.deepcopy(model.state_dict())
    gm = trace(model).graph_module
    gm = run(gm, "normalize", "fuse", "equalize")
    assert "fc1" in _stamps(gm) and "fc1_call2" not in _stamps(gm)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    x = torch.randn(5, 6)
    assert _relative_error(gm(x), model(x)) <= 1e-5


def _quantize(model, calibration, equalize):
    passes = {"after fuse": ["equalize"]} if equalize else None
    per_tensor = fxq.QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8),
                             weight=MinMaxObserver.with_args(dtype=torch.qint8, symmetric=True))
    prepared = fxq.prepare(model, fxq.QConfigMapping().set_global(per_tensor), calibration[:1], backend="reference",
                           passes=passes)
    with torch.no_grad():
        prepared(calibration)
    return fxq.convert(prepared)


def test_per_tensor_weights_with_channel_ranges_100x_apart_gain_clearly():
    torch.manual_seed(0)
    model = nn.Sequential(_spread(nn.Linear(16, 32), 0.1, 10), nn.ReLU(), nn.Linear(32, 8)).eval()
    with torch.no_grad():  # the second layer undoes the spread, so every channel matters to the output alike
        model[2].weight.div_(_output_ranges(model[0]) / _output_ranges(model[0]).mean())
    calibration, data = torch.randn(256, 16), torch.randn(256, 16)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        expected = model(data)
        plain = sqnr_db(expected, _quantize(model, calibration, False)(data))
        balanced = sqnr_db(expected, _quantize(model, calibration, True)(data))
    assert balanced > plain + 10, (plain, balanced)  # measured: 13.2 -> 35.7 dB
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_runs_after_fuse_in_a_pipeline_that_checks_numerics():
    torch.manual_seed(0)
    model = CHAINS["conv-relu-conv"][0]().eval()
    x = torch.randn(2, 3, 9, 9)
    with pytest.raises(PassOrderError, match="fused"):
        fxq.PassManager("normalize,equalize").run(traced(model), PassContext(example_inputs=(x,)))
    result = fxq.PassManager("normalize,fuse,equalize", verify_numerics=True).run(
        traced(model), PassContext(example_inputs=(x,)))
    assert _stamps(result.graph_module)
