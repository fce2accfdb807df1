import copy

import pytest
import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.errors import CalibrationError, ConfigError, PassOrderError
from fxq.graph_pass import PassContext
from fxq.statistics import ChannelStatistics
from tests.passes.helpers import traced


def _batches(shape, count=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * torch.arange(1, shape[1] + 1).reshape(1, -1, *[1] * (len(shape) - 2))
            + 3 for _ in range(count)]


@pytest.mark.parametrize("shape,axis,dims", [((5, 4, 6, 7), 1, (0, 2, 3)), ((5, 4, 6, 7), -3, (0, 2, 3)),
                                             ((3, 9, 6), -1, (0, 1))])
def test_statistics_match_torch_over_the_same_batches(shape, axis, dims):
    batches = _batches(shape)
    stats = ChannelStatistics(axis)
    for x in batches:
        assert stats(x) is x
    whole = torch.cat(batches).double()
    assert torch.allclose(stats.mean, whole.mean(dims), rtol=1e-12, atol=1e-12)
    assert torch.allclose(stats.second_moment, (whole * whole).mean(dims), rtol=1e-6)  # squares in float32
    assert torch.equal(stats.minimum, whole.amin(dims))
    assert torch.equal(stats.maximum, whole.amax(dims))
    assert torch.equal(stats.absmax, whole.abs().amax(dims))
    assert int(stats.count) == whole.numel() // whole.shape[axis]


def test_merged_halves_equal_the_whole_and_state_survives_copies():
    batches = _batches((4, 3, 5, 5), count=6)
    whole, first, second = ChannelStatistics(1), ChannelStatistics(1), ChannelStatistics(1)
    for i, x in enumerate(batches):
        whole(x)
        (first if i < 2 else second)(x)
    first.merge(second)
    first.merge(ChannelStatistics(1))  # one that saw nothing changes nothing
    for name in ("mean", "second_moment", "minimum", "maximum"):
        assert torch.allclose(getattr(first, name), getattr(whole, name), rtol=1e-12), name
    loaded = ChannelStatistics(1)
    loaded.load_state_dict(whole.state_dict())
    for copy_ in (loaded, copy.deepcopy(whole)):
        assert torch.equal(copy_.mean, whole.mean) and torch.equal(copy_.maximum, whole.maximum)


def test_statistics_errors_name_the_node():
    stats = ChannelStatistics(1)
    stats.node_name = "conv_3"
    with pytest.raises(CalibrationError, match="conv_3.*saw no data"):
        _ = stats.mean
    stats(torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="conv_3.*3 channels.*has 5"):
        stats(torch.randn(2, 5, 4))
    with pytest.raises(ConfigError, match="conv_3.*int64"):
        stats(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="conv_3"):
        stats.merge(ChannelStatistics(-1))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.float_conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 5)
        self.w = nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = self.float_conv(y) + y
        y = self.fc(y.mean((2, 3)))
        return nn.functional.linear(y, self.w)


def _prepared(model, x, backend="reference"):
    mapping = fxq.get_default_qconfig_mapping(backend).set_module_name("float_conv", None)
    prepared = fxq.prepare(model, mapping, (x,), backend=backend, recipe="none")
    return fxq.PassManager("record-input-statistics").run(prepared, PassContext(backend=backend)).graph_module


@pytest.mark.parametrize("backend", ["reference", "x86"])
def test_statistics_only_on_quantized_weighted_layers_and_they_see_the_layer_input(backend):
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(2, 3, 8, 8)
    gm = _prepared(model, x, backend)
    modules = dict(gm.named_modules())
    watched = {n.name: info(n).statistics for n in gm.graph.nodes if info(n).statistics}
    assert set(watched) == {"conv", "fc", "linear"}  # not float_conv (float by mapping), nor add/mean
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], ChannelStatistics)]
    assert len(calls) == 3
    for node in gm.graph.nodes:
        if node.name in watched:
            stats_call = node.args[0]
            assert stats_call.target == watched[node.name]["input0"] and stats_call in calls
    gm(x)
    with torch.no_grad():
        features = (model.float_conv(torch.relu(model.conv(x))) + torch.relu(model.conv(x))).mean((2, 3))
    expected = {"conv": (x.mean((0, 2, 3)), -3), "fc": (features.mean(0), -1),
                "linear": (model.fc(features).mean(0), -1)}
    for name, (mean, axis) in expected.items():
        stats = modules[watched[name]["input0"]]
        assert stats.axis == axis
        assert torch.allclose(stats.mean.float(), mean, atol=1e-6)
    assert torch.allclose(gm(x), model(x), atol=1e-6)  # identity: the prepared model still computes the float one


def test_needs_observers_first():
    with pytest.raises(PassOrderError, match="record-input-statistics"):
        fxq.PassManager("normalize,record-input-statistics").run(traced(_Net()), PassContext())
