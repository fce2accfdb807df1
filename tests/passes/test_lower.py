import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxq.annotation import info
from fxq.errors import CalibrationError
from fxq.graph_pass import PassContext
from fxq.nn.reference import WeightQuantized
from fxq.observers import MinMaxObserver, PerChannelMinMaxObserver
from fxq.qconfig import QConfig
from fxq.qconfig_mapping import QConfigMapping
from tests.models import sqnr
from tests.passes.helpers import run, traced

QC = QConfig(activation=MinMaxObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())
QC_PER_TENSOR_W = QConfig(activation=MinMaxObserver.with_args(),
                          weight=MinMaxObserver.with_args(dtype=torch.qint8, symmetric=True))


def _prepared(model, x, qconfig=QC):
    mapping = QConfigMapping().set_global(qconfig)
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=(x,), original=model)
    return run(traced(model.eval()), "normalize", "fuse", "assign-qconfig", "insert-observers", ctx=ctx)


def _lowered(gm):
    return run(gm, "lower")


def test_observers_become_quantize_dequantize_with_observed_qparams():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.linspace(-1, 3, 8).reshape(2, 4)
    gm = _prepared(model, x)
    gm(x)
    out = _lowered(gm)
    ops = [(n.op, n.target if n.op != "call_module" else type(out.get_submodule(n.target)).__name__)
           for n in out.graph.nodes if n.op not in ("placeholder", "output")]
    assert ops == [("call_function", torch.quantize_per_tensor), ("call_method", "dequantize"),
                   ("call_module", "WeightQuantized")]  # the model's output: float, never requantized
    (linear,) = [n for n in out.graph.nodes if n.op == "call_module"]
    assert info(linear).lowered_to == "reference:linear (float output)"
    q_input = next(n for n in out.graph.nodes if n.target is torch.quantize_per_tensor)
    # min/max of x are -1, 3: affine quint8 scale 4/255, zero point round(1 / (4/255)) = round(63.75) = 64
    assert q_input.args[1] == pytest.approx(4 / 255)
    assert q_input.args[2] == 64
    assert q_input.args[3] == torch.quint8


def test_weights_are_real_quantized_tensors_per_channel_or_per_tensor():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU())
    x = torch.randn(1, 2, 4, 4)
    for qconfig, scheme in ((QC, torch.per_channel_symmetric), (QC_PER_TENSOR_W, torch.per_tensor_symmetric)):
        gm = _prepared(model, x, qconfig)
        gm(x)
        out = _lowered(gm)
        module = out.get_submodule("0")
        assert isinstance(module, WeightQuantized)
        assert module.qweight.dtype == torch.qint8
        assert module.qweight.qscheme() in (scheme, torch.per_channel_affine, torch.per_tensor_affine)
        node = next(n for n in out.graph.nodes if n.target == "0")
        assert info(node).qparams["weight"]["scheme"] == ("per_channel" if qconfig is QC else "per_tensor")
        assert info(node).lowered_to == "reference:conv2d_relu"


def test_functional_linear_weight_quantized_through_get_attr():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return F.linear(x, self.w)

    x = torch.randn(2, 4)
    model = Fn().eval()
    gm = _prepared(model, x)
    gm(x)
    out = _lowered(gm)
    linear = next(n for n in out.graph.nodes if n.target is F.linear)
    weight_dq = linear.args[1]
    assert weight_dq.target == "dequantize" and weight_dq.args[0].op == "get_attr"
    assert getattr(out, weight_dq.args[0].target).is_quantized
    assert torch.allclose(out(x), model(x), atol=0.1)


def test_converting_without_calibration_names_the_node():
    model = nn.Sequential(nn.Linear(4, 3))
    gm = _prepared(model, torch.randn(2, 4))
    with pytest.raises(CalibrationError, match="input_1"):
        _lowered(gm)


def test_float_nodes_say_why_and_quantized_nodes_say_what_they_became():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.exp(self.fc(x))

    x = torch.randn(2, 4)
    gm = _prepared(M().eval(), x)
    gm(x)
    out = _lowered(gm)
    records = {n.name: info(n) for n in out.graph.nodes}
    assert records["fc"].lowered_to == "reference:linear (float output)"
    assert records["exp"].lowered_to == "float"
    assert "no quantized form of exp" in records["exp"].float_reason


def test_lower_swaps_dynamic_modules_with_the_qconfigs_weight_observer():
    from fxq.nn.quantized.dynamic_linear import DynamicLinear
    from fxq.qconfig import get_default_dynamic_qconfig
    from fxq.qconfig_mapping import QConfigMapping

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(4, 8)
    mapping = QConfigMapping().set_global(get_default_dynamic_qconfig(backend="x86"))
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=(x,), original=model, backend="x86")
    gm = run(traced(model), "normalize", "fuse", "assign-qconfig", "insert-observers", "lower", ctx=ctx)
    first, last = gm.get_submodule("0"), gm.get_submodule("2")
    assert isinstance(first, DynamicLinear) and first.relu and isinstance(last, DynamicLinear)
    assert first.qweight.int_repr().abs().max() <= 64  # the x86 dynamic qconfig's 7-bit weight range
    assert info(next(n for n in gm.graph.nodes if n.target == "2")).lowered_to == "DynamicLinear(dynamic qint8)"
    assert (gm(x) - model(x)).abs().max() < 0.05


class GlobalPool(nn.Module):
    """A 1x1 conv, optionally through a ReLU, then a global average pool."""

    def __init__(self, relu):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(8, 8, 1), relu

    def forward(self, x):
        y = self.conv(x)
        return F.adaptive_avg_pool2d(torch.relu(y) if self.relu else y, 1).flatten(1)


@pytest.mark.parametrize("relu", [True, False], ids=["post-relu", "zero-centred"])
def test_average_pool_shares_its_inputs_qparams_unless_calibration_shows_it_far_narrower(relu):
    """Over 8x8 positions the pooled post-ReLU features are 6x narrower than their input (2.6 bits lost: kept
    int8); over 16x16 zero-centred ones, 25x (4.6 bits: own qparams)."""
    torch.manual_seed(0)
    model = GlobalPool(relu)
    with torch.no_grad():
        model.conv.bias.zero_()
    x = torch.randn(4, 8, 8, 8) if relu else torch.randn(4, 8, 16, 16)
    gm = _prepared(model, x)
    gm(x)
    out = _lowered(gm)
    pool = next(n for n in out.graph.nodes if n.name == "adaptive_avg_pool2d")
    source = pool.args[0]
    while source.target != torch.quantize_per_tensor:
        source = source.args[0]
    input_scale, pool_scale = source.args[1], info(pool).qparams["output"]["scale"]
    why = info(pool).qparams["output"].get("why_own")
    if relu:
        assert pool_scale == input_scale and why is None
    else:
        assert pool_scale < input_scale / 8 and "narrower than its input" in why


class Lookup(nn.Module):
    """Token and bag embeddings into a linear head."""

    def __init__(self):
        super().__init__()
        self.tokens, self.bags = nn.Embedding(40, 8, padding_idx=0), nn.EmbeddingBag(30, 8, mode="mean")
        self.head = nn.Linear(8, 3)

    def forward(self, ids, bag_ids):
        return self.head(self.tokens(ids).sum(1) + self.bags(bag_ids))


@pytest.mark.parametrize("bits", [8, 4])
def test_lower_stores_embedding_tables_in_rows_for_a_weight_only_qconfig(bits):
    from fxq.nn.quantized.embedding import QuantizedEmbedding
    from fxq.qconfig import get_default_embedding_qconfig

    torch.manual_seed(0)
    model = Lookup().eval()
    x = (torch.randint(0, 40, (4, 5)), torch.randint(0, 30, (4, 3)))
    mapping = QConfigMapping().set_global(QC).set_object_type(nn.Embedding, get_default_embedding_qconfig(bits)) \
        .set_object_type(nn.EmbeddingBag, get_default_embedding_qconfig(bits))
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=x, original=model, backend="reference")
    gm = run(traced(model), "normalize", "fuse", "assign-qconfig", "insert-observers", ctx=ctx)
    for batch in (x, (torch.randint(0, 40, (4, 5)), torch.randint(0, 30, (4, 3)))):
        gm(*batch)
    gm = run(gm, "lower", ctx=ctx)
    for name, float_module in (("tokens", model.tokens), ("bags", model.bags)):
        runtime = gm.get_submodule(name)
        assert isinstance(runtime, QuantizedEmbedding) and runtime.bits == bits
        assert info(next(n for n in gm.graph.nodes if n.target == name)).lowered_to == \
            f"QuantizedEmbedding(weight-only {bits}-bit rows)"
        # each stored value within half a step of its row's range (min to max in 2**bits - 1 steps, fp16 scales
        # for 4 bits)
        table = float_module.weight
        step = (table.amax(1) - table.amin(1)) / (2 ** bits - 1)
        assert ((runtime.weight - table).abs() <= step.unsqueeze(1) * 0.51 + 1e-3 * (bits == 4)).all()
    assert runtime.padding_idx is None and gm.get_submodule("tokens").padding_idx == 0
    # the lookups read the stored rows; the int8 head adds its own rounding
    looked_up = gm.get_submodule("tokens").weight[x[0]].sum(1) + F.embedding_bag(x[1], runtime.weight, mode="mean")
    assert (gm(*x) - model.head(looked_up)).abs().max() < 0.05


def test_a_weight_only_qconfig_on_an_op_with_no_weight_only_form_leaves_it_float_and_says_so():
    from fxq.qconfig import get_default_embedding_qconfig

    model = nn.Sequential(nn.Linear(4, 4)).eval()
    mapping = QConfigMapping().set_global(get_default_embedding_qconfig())
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=(torch.randn(2, 4),), original=model, backend="x86")
    gm = run(traced(model), "normalize", "fuse", "assign-qconfig", "insert-observers", "lower", ctx=ctx)
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert isinstance(gm.get_submodule(node.target), nn.Linear)
    assert "no weight-only form for linear" in info(node).float_reason
    assert "quantize_dynamic" in info(node).float_reason


class SiluBetweenConvs(nn.Module):
    """conv -> SiLU -> conv (x86 has no int8 SiLU: a float island between two int8 kernels), and a global pool
    that reads the second SiLU's float output."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = F.silu(self.b(F.silu(self.a(x))))
        return F.adaptive_avg_pool2d(y, 1).flatten(1), y


def test_an_elementwise_island_between_int8_kernels_keeps_their_layout_and_other_float_reads_get_contiguous():
    import fxq

    torch.manual_seed(0)
    model, batches = SiluBetweenConvs().eval(), [(torch.randn(2, 3, 12, 12),) for _ in range(3)]
    qm = fxq.quantize(model, batches[0], batches, backend="x86", runtime="graph")
    silus = [n for n in qm.graph.nodes if info(n).concept == "silu"]
    # the first SiLU reads the dequantized channels-last conv output as it is; the second's input is made
    # contiguous, since its output is also a model output and a pool's input
    assert [n.args[0].target for n in silus] == ["dequantize", "contiguous"]
    pooled, y = qm(*batches[0])
    assert y.is_contiguous() and pooled.is_contiguous()
    reference = model(*batches[0])
    assert all(sqnr(r, q) >= 30 for r, q in zip(reference, (pooled, y), strict=True))
