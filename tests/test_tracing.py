import warnings

import pytest
import torch
from torch import nn

from fxq.annotation import info
from fxq.errors import ConfigError, FxqWarning, TraceError
from fxq.tracing import trace


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Gate()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        return self.seq(torch.relu(self.gate(self.fc(x)))).sum(-1)


def _ops(gm):
    return [(n.op, n.target) for n in gm.graph.nodes if n.op.startswith("call")]


def test_untraceable_submodule_becomes_a_float_leaf():
    model = Net().eval()
    with pytest.warns(FxqWarning, match="gate"):
        captured = trace(model)
    gm = captured.graph_module
    assert [leaf.path for leaf in captured.float_leaves] == ["gate"]
    gate = next(n for n in gm.graph.nodes if n.target == "gate")
    assert "could not be traced" in info(gate).float_reason and "x.sum() > 0" in info(gate).float_reason
    for sign in (1, -1):  # both branches, decided at run time
        x = torch.ones(2, 4) * sign * 5
        assert torch.equal(gm(x), model(x))


def test_without_retry_the_error_names_path_line_and_fix():
    with pytest.raises(TraceError) as caught:
        trace(Net(), retry_as_leaf=False)
    message = str(caught.value)
    assert "'gate'" in message and "if x.sum() > 0:" in message and "leaf_modules=['gate']" in message
    assert caught.value.__cause__ is not None


def test_nested_failure_names_the_deepest_module():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Inner()

        def forward(self, x):
            return self.block(x)

    with pytest.raises(TraceError, match=r"'block\.inner'"):
        trace(Outer(), retry_as_leaf=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        captured = trace(Outer())
    assert [leaf.path for leaf in captured.float_leaves] == ["block.inner"]
    assert ("call_module", "block.fc") in _ops(captured.graph_module)


def test_untraceable_root_names_the_root_and_line():
    class Root(nn.Module):
        def forward(self, x):
            for row in x:  # iterating a Proxy
                x = x + row
            return x

    with pytest.raises(TraceError, match=r"the root module Root.*\n.*for row in x"):
        trace(Root())


def test_leaves_by_name_and_type_and_containers_traced_through():
    captured = trace(Net(), leaf_modules=["gate"], leaf_module_types=[nn.Sequential])
    assert ("call_module", "gate") in _ops(captured.graph_module)
    assert ("call_module", "seq") in _ops(captured.graph_module)
    assert captured.float_leaves == []
    plain = trace(Inner(), leaf_modules=["inner"])
    assert ("call_module", "inner") in _ops(plain.graph_module)
    seq = trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU())).graph_module
    assert _ops(seq) == [("call_module", "0"), ("call_module", "1")]


def test_concrete_args():
    class Flag(nn.Module):
        def forward(self, x, double: bool = False):
            return x * 2 if double else x

    gm = trace(Flag(), concrete_args={"double": True}).graph_module
    assert torch.equal(gm(torch.ones(2), True), torch.full((2,), 2.0))


def test_scopes_recorded_for_every_kind_of_node():
    class Sub(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x)).view(-1)

    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = Sub()

        def forward(self, x):
            return self.sub(x) + 1

    gm = trace(Top()).graph_module
    scopes = {n.name: (info(n).module_path, info(n).module_type) for n in gm.graph.nodes}
    assert scopes["sub_fc"] == ("sub.fc", nn.Linear)
    assert scopes["relu"] == ("sub", Sub)
    assert scopes["view"] == ("sub", Sub)
    assert scopes["add"] == ("", Top)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"'gat'.*did you mean 'gate'"):
        trace(Net(), leaf_modules=["gat"])
    with pytest.raises(ConfigError, match="nn.Module subclasses"):
        trace(Net(), leaf_module_types=[int])


def test_tracing_does_not_change_the_model():
    model = Net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = set(vars(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        trace(model)
    assert model.training and set(vars(model)) == attributes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Encoder(nn.Module):
    """A model built from torch's own transformer modules, which torch.fx keeps whole."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), 2)
        self.act = nn.PReLU()  # a torch.nn leaf with a parameter, but no weight matrix: nothing hidden
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.act(self.encoder(self.embed(x))))


def test_torch_modules_kept_whole_with_weights_inside_are_reported_as_float_leaves():
    with pytest.warns(FxqWarning, match=r"encoder \(TransformerEncoder\).*capture='export'"):
        captured = trace(_Encoder().eval())
    assert [(leaf.path, leaf.type_name) for leaf in captured.float_leaves] == [("encoder", "TransformerEncoder")]
    node = next(n for n in captured.graph_module.graph.nodes if n.target == "encoder")
    assert "its weights run float" in info(node).float_reason


def test_leaves_the_user_chose_are_not_reported():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FxqWarning)
        assert trace(_Encoder().eval(), leaf_modules=["encoder"]).float_leaves == []
        assert trace(_Encoder().eval(), leaf_module_types=[nn.TransformerEncoder]).float_leaves == []


def test_quantize_by_default_exports_what_tracing_would_keep_whole():
    import fxq

    torch.manual_seed(0)
    model = _Encoder().eval()
    batches = [(torch.randn(2, 6, 16),) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = fxq.quantize(model, batches[0], batches)
        traced = fxq.quantize(model, batches[0], batches, capture="fx")
    assert quantized.meta["fxq_capture"]["how"] == "export"
    assert "TransformerEncoder" in quantized.meta["fxq_capture"]["why"]
    linears = [n for n in quantized.graph.nodes if info(n).concept == "linear" and info(n).lowered_to != "float"]
    assert len(linears) >= 2 + 2 * 3  # embed, head, and per layer the attention output and both feed-forwards
    assert fxq.report_of(quantized).size_ratio < 0.7 and fxq.report_of(traced).size_ratio > 0.9  # 0.62, 0.98
    with torch.no_grad():
        assert fxq.metrics.sqnr_db(model(*batches[1]), quantized(*batches[1])) >= 25
