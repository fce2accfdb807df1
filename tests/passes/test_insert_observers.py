import operator

import torch
import torch.nn.functional as F
from torch import nn

from fxq.annotation import FLOAT_OUTPUT, info
from fxq.graph_pass import PassContext
from fxq.observers import FixedQParamsObserver, MinMaxObserver, Observer, PerChannelMinMaxObserver
from fxq.qconfig import QConfig
from fxq.qconfig_mapping import QConfigMapping
from tests.passes.helpers import run, traced

QC = QConfig(activation=MinMaxObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())


def _observed(model, *inputs, mapping=None):
    mapping = mapping or QConfigMapping().set_global(QC)
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=inputs, original=model)
    gm = run(traced(model.eval()), "normalize", "fuse", "assign-qconfig", "insert-observers", ctx=ctx)
    return gm


def _sequence(gm):
    """Op nodes in order, with observer calls shown as 'obs:<observer>'."""
    modules = dict(gm.named_modules())
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(modules[n.target], Observer):
            out.append(f"obs:{n.target}")
        elif n.op in ("call_module", "call_function", "call_method"):
            out.append(n.name)
    return out


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.pool = nn.MaxPool1d(2)

    def forward(self, x):
        y = self.fc(x)
        a = torch.sigmoid(y)
        b = y.flatten(1)
        c = self.pool(y.unsqueeze(1))
        return a, b, c, y * 2


def test_structure_own_shared_fixed():
    gm = _observed(Branchy(), torch.randn(2, 4))
    assert _sequence(gm) == [
        "obs:obs_x", "fc", "obs:obs_fc",
        "sigmoid", "obs:obs_sigmoid",           # own qparams: its bound is only an upper limit
        "flatten", "obs:obs_fc",                # shares fc's observer
        "unsqueeze", "obs:obs_fc", "pool", "obs:obs_fc",
        "mul", "obs:obs_mul",
    ]
    assert not isinstance(gm.get_submodule("obs_sigmoid"), FixedQParamsObserver)
    assert info(next(n for n in gm.graph.nodes if n.name == "fc")).observers == {"input0": "obs_x",
                                                                                 "output": "obs_fc"}


def test_one_observer_per_tensor_with_many_users():
    class Fanout(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)  # needs x in int8, so the others read that int8 form too

        def forward(self, x):
            return self.fc(x), x + 1, x * 3, torch.cat([x, x], 1)

    gm = _observed(Fanout(), torch.randn(2, 3))
    observer_calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "obs_x"]
    assert len(observer_calls) == 1
    readers = {user.name for user in observer_calls[0].users}
    assert {"fc", "add", "mul", "cat"} <= readers or {"fc", "add", "mul"} <= readers


def test_an_op_with_float_inputs_that_no_int8_op_reads_stays_float():
    class Rotary(nn.Module):
        """A product of float values (as a rotary embedding's q * cos before float attention), next to one whose
        input is int8 already."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, cos):
            return torch.exp(x) * cos, self.fc(x) * 2

    gm = _observed(Rotary(), torch.randn(2, 4), torch.randn(2, 4))
    products = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is operator.mul]
    float_product, int8_product = products
    assert "would only add rounding" in info(float_product).float_reason
    assert not any(user.op == "call_module" for user in float_product.users)
    assert info(int8_product).float_reason is None and "output" in info(int8_product).observers


def test_no_observer_on_shape_arithmetic_integers_or_bools():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 4)

        def forward(self, ids, mask):
            h = self.fc(self.emb(ids))
            n = h.size(0) * 2
            keep = mask.unsqueeze(-1)
            return h.reshape(n // 2, 3, -1) * keep.float(), (ids + 1)

    ids = torch.randint(0, 10, (2, 3))
    mask = torch.ones(2, 3, dtype=torch.bool)
    gm = _observed(Masked(), ids, mask)
    modules = dict(gm.named_modules())
    observed_inputs = {n.args[0].name for n in gm.graph.nodes
                       if n.op == "call_module" and isinstance(modules[n.target], Observer)}
    assert "ids" not in observed_inputs and "mask" not in observed_inputs
    assert "size" not in observed_inputs and "mul" not in observed_inputs  # size(0) * 2 is Python ints
    assert "add" not in observed_inputs  # ids + 1 is an integer tensor
    add = next(n for n in gm.graph.nodes if n.name == "add")
    assert "not a float tensor" in info(add).float_reason
    assert "emb" in observed_inputs or info(next(n for n in gm.graph.nodes if n.name == "emb")).float_reason


def test_float_ops_keep_exact_inputs_and_are_explained():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x), torch.exp(x)

    gm = _observed(Mixed(), torch.randn(2, 4))
    exp = next(n for n in gm.graph.nodes if n.name == "exp")
    assert exp.args[0].op == "placeholder"  # the float op reads x itself, not the observer
    assert "no quantized form of" in info(exp).float_reason


def test_functional_linear_weight_is_not_observed_as_an_activation():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return F.linear(x, self.w, self.b)

    gm = _observed(Fn(), torch.randn(2, 4))
    assert _sequence(gm) == ["obs:obs_x", "linear"]  # its output is the model's: float, not observed


def test_prepared_graph_still_computes_the_float_function():
    model = Branchy().eval()
    x = torch.randn(3, 4)
    gm = _observed(model, x)
    for got, want in zip(gm(x), model(x), strict=True):
        assert torch.equal(got, want)


def test_dynamic_qconfig_places_no_observers_and_marks_supported_modules():
    from fxq.qconfig import get_default_dynamic_qconfig

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu, self.lstm = nn.Linear(8, 8), nn.ReLU(), nn.LSTM(8, 8)

        def forward(self, x):
            out, _ = self.lstm(self.relu(self.fc(x)))
            return out

    mapping = QConfigMapping().set_global(get_default_dynamic_qconfig())
    gm = _observed(Recurrent(), torch.randn(5, 3, 8), mapping=mapping)
    assert not any(isinstance(m, Observer) for m in gm.modules())
    nodes = {n.name: info(n) for n in gm.graph.nodes}
    assert nodes["fc"].precision == "dynamic qint8" and nodes["fc"].concept == "linear_relu"
    assert nodes["lstm"].precision == "dynamic qint8"
    assert "no dynamic kernel for getitem" in nodes["getitem"].float_reason


class _Readers(nn.Module):
    """fc1 is read by an int8 linear through a reshape; fc2 through a reshape by the model output; fc3 by a
    float op only (exp has no quantized form)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc1(x).reshape(-1, 4)
        return self.fc2(a).reshape(-1, 2), torch.exp(self.fc3(a))


def test_linear_outputs_are_observed_only_where_an_int8_op_reads_them():
    gm = _observed(_Readers(), torch.randn(2, 4))
    records = {n.name: info(n) for n in gm.graph.nodes}
    assert "output" in records["fc1"].observers and records["fc1"].precision is None
    for name in ("fc2", "fc3"):
        assert "output" not in records[name].observers and "input0" in records[name].observers
        assert records[name].precision == FLOAT_OUTPUT
    assert "output" not in records["reshape_1"].observers  # shares fc2's float value, so it runs float


def test_ops_without_a_float_output_kernel_are_always_observed():
    gm = _observed(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.randn(1, 3, 4, 4))
    (conv,) = [n for n in gm.graph.nodes if info(n).concept == "conv2d"]
    assert "output" in info(conv).observers and info(conv).precision is None


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)  # reads the pooled features in int8

    def forward(self, x):
        y = torch.sigmoid(x)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def test_average_pool_is_observed_both_ways_for_lower_to_choose():
    gm = _observed(Pools(), torch.randn(2, 3, 4, 4))
    assert _sequence(gm) == ["obs:obs_x", "sigmoid", "obs:obs_sigmoid",
                             "adaptive_avg_pool2d", "obs:obs_adaptive_avg_pool2d",  # its own...
                             "flatten", "obs:obs_adaptive_avg_pool2d", "fc"]
    pool = next(n for n in gm.graph.nodes if n.name == "adaptive_avg_pool2d")
    assert info(pool).observers == {"input0": "obs_sigmoid", "output": "obs_adaptive_avg_pool2d"}  # ...and its input's


class Positions(nn.Module):
    """Position ids computed in float from a mask and cast (as OPT does), next to an activation path."""

    def __init__(self):
        super().__init__()
        self.positions = nn.Embedding(40, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x, mask):
        ids = (torch.cumsum(mask, dim=1) * mask - 1).long() + 1
        return self.fc(x * 2.0 + self.positions(ids))


def test_arithmetic_that_becomes_integers_stays_float_and_activations_do_not():
    mask = torch.ones(2, 33)
    mask[1, 30:] = 0
    gm = _observed(Positions(), torch.randn(2, 33, 8), mask)
    by_name = {n.name: n for n in gm.graph.nodes}
    index_math = [n for n in by_name.values() if n.op == "call_function" and n.target is operator.mul
                  and "mask" in [getattr(a, "name", None) for a in n.args]]
    assert len(index_math) == 1
    assert "become integers" in info(index_math[0]).float_reason
    assert not any(user.op == "call_module" and user.target.startswith("obs") for user in index_math[0].users)
    scaled = next(n for n in by_name.values() if n.target is operator.mul and n not in index_math)
    assert info(scaled).float_reason is None  # x * 2.0 is an activation: observed as usual
    assert any(user.op == "call_module" and user.target.startswith("obs") for user in scaled.users)


def test_positions_computed_in_float_survive_quantization_exactly():
    import fxq
    model = Positions().eval()
    mask = torch.ones(2, 33)
    mask[1, 30:] = 0
    batches = [(torch.randn(2, 33, 8), mask) for _ in range(4)]
    quantized = fxq.quantize(model, batches[0], batches, runtime="graph")  # the graph runs its modules' hooks
    ids = []
    hook = quantized.get_submodule("positions").register_forward_hook(lambda m, args, out: ids.append(args[0]))
    quantized(*batches[0])
    hook.remove()
    expected = (torch.cumsum(mask, dim=1) * mask - 1).long() + 1
    assert torch.equal(ids[0], expected)  # a 16-level int8 step of 0.13 over 0..32 would have moved some by one


class PartialSlice(nn.Module):
    """Splits the last dimension at its end, leaving an empty part (fully rotary attention's unrotated half)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        rotated, rest = y[..., :8], y[..., 8:]
        return torch.cat([torch.relu(rotated), rest], dim=-1)


def test_empty_tensors_are_left_float_with_a_reason_and_calibration_succeeds():
    import fxq
    torch.manual_seed(0)
    model = PartialSlice().eval()
    batches = [(torch.randn(64, 8),) for _ in range(4)]
    quantized = fxq.quantize(model, batches[0], batches)
    reasons = [record.float_reason for record in (info(n) for n in quantized.graph.nodes) if record.float_reason]
    assert any("no elements" in reason for reason in reasons)
    assert fxq.report_of(quantized).quantized
    with torch.no_grad():
        assert fxq.metrics.sqnr_db(model(*batches[1]), quantized(*batches[1])) >= 25  # the fc and relu in int8
