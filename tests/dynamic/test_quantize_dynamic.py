"""quantize_dynamic on small models: which modules become what, the spec forms, reports and errors."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import fxq
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.dynamic_rnn import DynamicGRU, DynamicLSTM
from fxq.nn.quantized.embedding import QuantizedEmbedding
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear


class LanguageModel(nn.Module):
    """Embedding, 2-layer LSTM, linear head: the shape of a small word-level language model."""

    def __init__(self, vocab=500, dim=64, hidden=128):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)


def _tokens(batch=4, length=20, vocab=500, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _sqnr(reference, test):
    return 10 * torch.log10(reference.pow(2).sum() / (reference - test).pow(2).sum()).item()


def test_lstm_language_model_runs_real_quantized_kernels_within_tolerance():
    torch.manual_seed(0)
    model = LanguageModel().eval()
    quantized = fxq.quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.Embedding}, dtype=torch.qint8)
    assert isinstance(quantized.lstm, DynamicLSTM) and isinstance(quantized.head, DynamicLinear)
    assert isinstance(quantized.embed, QuantizedEmbedding) and quantized.embed.bits == 8
    assert not any(isinstance(m, (nn.LSTM, nn.Linear, nn.Embedding)) for m in quantized.modules())
    tokens = _tokens()
    with torch.no_grad():
        reference, got = model(tokens), quantized(tokens)
    # stated tolerance: logits within 30 dB SQNR of float, and the same top-1 next token almost everywhere
    assert _sqnr(reference, got) > 30
    assert (reference.argmax(-1) == got.argmax(-1)).float().mean() > 0.95
    report = fxq.report_of(quantized)
    assert report.converted == {"DynamicLSTM": 1, "DynamicLinear(qint8)": 1, "QuantizedEmbedding(8-bit)": 1}
    assert report.weight_ratio < 0.3 and report.size_after < 0.35 * report.size_before


def test_without_a_spec_int8_also_stores_embedding_tables_in_8_bit_rows_and_fp16_leaves_them_alone():
    torch.manual_seed(0)
    model = LanguageModel().eval()
    default = fxq.quantize_dynamic(model)
    assert isinstance(default.embed, QuantizedEmbedding) and default.embed.bits == 8
    assert fxq.report_of(default).converted["QuantizedEmbedding(8-bit)"] == 1
    lookup = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: fp16 has no embedding form, and none is asked for
        half = fxq.quantize_dynamic(lookup, dtype=torch.float16)
    assert type(half[0]) is nn.Embedding and isinstance(half[1], DynamicLinear) and half[1].fp16


def test_lstm_kernel_is_the_quantized_one():
    """The LSTM's weights exist only as qint8 and the call goes through torch.quantized_lstm."""
    torch.manual_seed(0)
    model = LanguageModel().eval()
    quantized = fxq.quantize_dynamic(model, {nn.LSTM})
    assert all(w.dtype == torch.qint8 for w in quantized.lstm.weights.values())
    assert not any(p.is_floating_point() and p.dim() == 2 for p in quantized.lstm.parameters())
    calls = []
    original = torch.quantized_lstm
    torch.quantized_lstm = lambda *a, **k: calls.append(k) or original(*a, **k)
    try:
        quantized(_tokens())
    finally:
        torch.quantized_lstm = original
    assert calls and calls[0]["use_dynamic"] is True and calls[0]["dtype"] == torch.qint8


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional, batch_first, layers", [(False, False, 1), (True, True, 2), (True, False, 3)])
def test_rnn_variants_match_float(cls, bidirectional, batch_first, layers):
    torch.manual_seed(1)
    rnn = cls(16, 32, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    wrapper = nn.Sequential(rnn)
    quantized = fxq.quantize_dynamic(wrapper, {cls})[0]
    assert isinstance(quantized, DynamicLSTM if cls is nn.LSTM else DynamicGRU)
    x = torch.randn(5, 7, 16) if batch_first else torch.randn(7, 5, 16)
    with torch.no_grad():
        ref_out, ref_h = rnn(x)
        out, h = quantized(x)
    assert out.shape == ref_out.shape and _sqnr(ref_out, out) > 30
    ref_h, h = (ref_h[0], h[0]) if cls is nn.LSTM else (ref_h, h)
    assert h.shape == ref_h.shape and _sqnr(ref_h, h) > 30


def test_runtime_modules_round_trip_state_dict_copy_and_print():
    torch.manual_seed(0)
    quantized = fxq.quantize_dynamic(LanguageModel().eval(), {nn.Linear, nn.LSTM, nn.Embedding})
    tokens = _tokens()
    expected = quantized(tokens)
    assert torch.equal(copy.deepcopy(quantized)(tokens), expected)
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)  # different float weights, then the saved int8 state
    other = fxq.quantize_dynamic(LanguageModel().eval(), {nn.Linear, nn.LSTM, nn.Embedding})
    assert not torch.equal(other(tokens), expected)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other(tokens), expected)
    text = repr(quantized)
    assert "activations=dynamic" in text and "qint8" in text and "8-bit row-wise" in text


def test_fp16_dynamic_linear_and_dict_form_by_name_and_type():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 4))).eval()
    spec = {nn.Linear: torch.float16, "2": torch.qint8, "2.1": None}
    quantized = fxq.quantize_dynamic(model, spec)
    assert isinstance(quantized[0], DynamicLinear) and quantized[0].fp16
    assert isinstance(quantized[2][0], DynamicLinear) and not quantized[2][0].fp16  # the name wins over the type
    assert isinstance(quantized[2][1], nn.Linear)  # None keeps it float
    x = torch.randn(3, 16)
    assert _sqnr(model(x), quantized(x)) > 30


def test_weight_only_linear_int8_and_int4_with_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 64)).eval()
    x = torch.randn(8, 256)
    for bits, floor_db in ((8, 35), (4, 15)):
        quantized = fxq.quantize_dynamic(model, {nn.Linear: fxq.WeightOnly(bits=bits, group_size=64)})
        layer = quantized[0]
        assert isinstance(layer, WeightOnlyLinear) and layer.bits == bits and layer.scale.shape == (512, 4)
        assert _sqnr(model(x), quantized(x)) > floor_db
        ratio = fxq.report_of(quantized).weight_ratio
        assert ratio < (0.27 if bits == 8 else 0.15), ratio  # int4: half a byte per weight plus group scales


def test_embedding_bags_8_and_4_bit():
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(1000, 32, mode="mean")
    model = nn.Sequential(bag).eval()
    indices, offsets = torch.randint(0, 1000, (40,)), torch.tensor([0, 5, 5, 17, 30])
    for dtype, floor_db in ((torch.qint8, 35), (torch.quint4x2, 15)):
        quantized = fxq.quantize_dynamic(model, {nn.EmbeddingBag}, dtype=dtype)
        assert _sqnr(bag(indices, offsets), quantized[0](indices, offsets)) > floor_db


def test_unsupported_type_is_an_error_naming_what_is_supported():
    with pytest.raises(fxq.ConfigError, match="cannot quantize Conv2d.*Linear, LSTM, GRU, Embedding"):
        fxq.quantize_dynamic(nn.Sequential(nn.Conv2d(3, 3, 1)), {nn.Conv2d})


def test_unknown_name_is_an_error_with_suggestions():
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(4, 4))
    with pytest.raises(fxq.ConfigError, match="'encodr' \\(did you mean 'encoder'"):
        fxq.quantize_dynamic(model, {"encodr": torch.qint8})


def test_modules_that_cannot_convert_stay_float_with_a_warning_and_the_reason():
    model = nn.Sequential(nn.LSTM(8, 16, proj_size=4), nn.EmbeddingBag(10, 4, mode="max")).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = fxq.quantize_dynamic(model, {nn.LSTM, nn.EmbeddingBag})
    assert isinstance(quantized[0], nn.LSTM) and isinstance(quantized[1], nn.EmbeddingBag)
    reasons = {path: why for path, _, why in fxq.report_of(quantized).left_float}
    assert "proj_size" in reasons["0"] and "max" in reasons["1"]
    assert any(issubclass(w.category, fxq.FxqWarning) and "left float" in str(w.message) for w in caught)


def test_fp16_lstm_is_refused_per_module():
    model = nn.Sequential(nn.LSTM(8, 16)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = fxq.quantize_dynamic(model, {nn.LSTM}, dtype=torch.float16)
    assert isinstance(quantized[0], nn.LSTM)
    assert "qint8 only" in fxq.report_of(quantized).left_float[0][2]


def test_the_model_is_not_changed_unless_inplace():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    fxq.quantize_dynamic(model)
    assert isinstance(model[0], nn.Linear)
    same = fxq.quantize_dynamic(model, inplace=True)
    assert same is model and isinstance(model[0], DynamicLinear)


def test_qnnpack_engine_runs_the_same_model_with_full_range_weights():
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine")
    torch.manual_seed(0)
    model = LanguageModel().eval()
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        quantized = fxq.quantize_dynamic(model, {nn.Linear, nn.LSTM})
        tokens = _tokens()
        with torch.no_grad():
            assert _sqnr(model(tokens), quantized(tokens)) > 30
        assert quantized.head.qweight.int_repr().min() == -128  # no 7-bit narrowing: qnnpack cannot overflow
        assert quantized.head.engine == "qnnpack"
    finally:
        torch.backends.quantized.engine = previous


@pytest.fixture
def torch_int4_kernel(monkeypatch):
    """int4 Linears on torch's kernel, as on a machine where fxq's own (AVX2) kernel does not build."""
    from fxq.nn.quantized import weight_only_kernels

    monkeypatch.setattr(weight_only_kernels, "applies", lambda bits, group_size, in_features: False)


def test_int4_weight_only_runs_torch_int4_kernel_and_computes_the_dequantized_product(torch_int4_kernel):
    import pickle

    torch.manual_seed(0)
    layer = nn.Linear(256, 96)
    fast, fallback = WeightOnlyLinear(layer, 4, 64), WeightOnlyLinear(layer, 4, 100)
    assert fast.compute.startswith("torch int4") and not fallback.uses_kernel \
        and not WeightOnlyLinear(layer, 8, 64).uses_kernel
    x = torch.randn(3, 5, 256)
    expected = nn.functional.linear(x, fast.dequantized_weight(), layer.bias)  # the float product, by hand
    assert _sqnr(expected, fast(x)) > 40  # bfloat16 activations: close, not equal
    for copy_of in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert copy_of.uses_kernel and torch.equal(copy_of(x), fast(x))
    other = WeightOnlyLinear(nn.Linear(256, 96), 4, 64)
    other.load_state_dict(fast.state_dict())
    assert torch.equal(other(x), fast(x))  # the kernel's packed copy follows the loaded weight


def test_torch_int4_kernel_layers_hold_one_copy_of_the_weight_and_read_it_back_exactly(torch_int4_kernel,
                                                                                       monkeypatch):
    from fxq.nn.quantized import int4_layout

    torch.manual_seed(0)
    layer = nn.Linear(256, 96)
    single = WeightOnlyLinear(layer, 4, 64)
    assert single.qweight is None  # the kernel's packed weight is the only copy (AVX2's layout is read back)
    monkeypatch.setattr(int4_layout, "readable", lambda out_features: False)
    double = WeightOnlyLinear(layer, 4, 64)  # where the layout is unknown the module keeps its own 4-bit copy
    assert double.qweight is not None
    assert torch.equal(single.state_dict()["qweight"], double.state_dict()["qweight"])
    assert torch.equal(single.weight, double.weight)


def _dynamic_weight(dtype, seed):
    """A (32, 64) weight as DynamicLinear takes it: qint8 per channel, or float16."""
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(seed))
    if dtype == torch.float16:
        return weight.half()
    return torch.quantize_per_channel(weight, weight.abs().amax(1) / 127, torch.zeros(32, dtype=torch.long), 0,
                                      torch.qint8)


def _holds_one_weight_copy(layer):
    """No weight tensor beside the kernel's packed one: the bias is the only tensor the module keeps."""
    tensors = [name for name, value in vars(layer).items() if isinstance(value, torch.Tensor)]
    return not tensors and list(dict(layer.named_buffers())) == ["bias"]


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamic_linear_holds_only_the_packed_weight_and_round_trips_it_exactly(dtype, tmp_path):
    import pickle

    from fxq.nn.quantized import weight_state

    weight, bias = _dynamic_weight(dtype, 0), torch.randn(32, generator=torch.Generator().manual_seed(1))
    layer = DynamicLinear(weight, bias, relu=True)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    expected = layer(x)
    assert _holds_one_weight_copy(layer)
    state = layer.state_dict()  # what the module stored when it kept the weight itself: read back from the kernel
    assert state.keys() == {"bias", *weight_state.keys_like(weight)}
    assert all(torch.equal(state[key], value) for key, value in weight_state.to_state(weight).items())
    other = DynamicLinear(_dynamic_weight(dtype, 3), torch.zeros(32), relu=True)
    other.load_state_dict(state)
    fxq.save(layer, tmp_path / "layer.fxq")
    for copy_of in (other, copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), fxq.load(tmp_path / "layer.fxq")):
        assert _holds_one_weight_copy(copy_of) and torch.equal(copy_of(x), expected)
        assert all(torch.equal(copy_of.state_dict()[key], value) for key, value in state.items())
    assert torch.equal(torch.jit.script(layer)(x), expected)
    layer.bias = torch.zeros(32)
    layer._repack()  # repacks the packed weight with the new bias
    assert torch.equal(layer(x), DynamicLinear(weight, torch.zeros(32), relu=True)(x))


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("given_state", [False, True])
def test_dynamic_rnns_take_packed_sequences_as_the_float_modules_do(kind, given_state):
    torch.manual_seed(0)
    rnn = kind(16, 32, num_layers=2, bidirectional=True, batch_first=True).eval()
    quantized = fxq.quantize_dynamic(nn.Sequential(rnn))[0]
    lengths = torch.tensor([4, 7, 2])  # not sorted: states come back in the caller's batch order
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(3, 7, 16), lengths, batch_first=True,
                                               enforce_sorted=False)
    states = torch.randn(4, 3, 32)
    state = (None if not given_state else (states, torch.randn(4, 3, 32)) if kind is nn.LSTM else states)
    with torch.no_grad():
        (expected, expected_state), (got, got_state) = rnn(packed, state), quantized(packed, state)
    assert isinstance(got, nn.utils.rnn.PackedSequence) and torch.equal(got.batch_sizes, expected.batch_sizes)
    assert _sqnr(expected.data, got.data) > 30  # measured 39-45 dB
    if kind is nn.LSTM:
        expected_state, got_state = expected_state[0], got_state[0]
    assert _sqnr(expected_state, got_state) > 30  # a state out of batch order would read near 0 dB


@pytest.mark.parametrize("bits", [8, 4])
def test_an_embeddings_rows_give_its_table_as_levels_times_scale_plus_offset(bits):
    """What the exporters store: uint8 levels (one per value, 4-bit ones unpacked) and a scale and offset per row."""
    torch.manual_seed(0)
    quantized = QuantizedEmbedding(nn.Embedding(20, 6), bits)
    levels, scales, offsets = quantized.rows()
    assert levels.dtype == torch.uint8 and levels.shape == (20, 6) and int(levels.max()) <= 2 ** bits - 1
    assert scales.shape == offsets.shape == (20,)
    torch.testing.assert_close(levels.float() * scales[:, None] + offsets[:, None], quantized.weight)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_model_keeps_its_dtype_around_int8_layers(dtype):
    """The kernels compute in float32; each runtime module hands the model's dtype back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 32), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    half = copy.deepcopy(model).to(dtype)
    ids = _tokens(vocab=50)
    for spec in (None, "int4"):
        quantized = fxq.quantize_dynamic(half, spec)
        assert isinstance(quantized[0], QuantizedEmbedding) and quantized[0].weight.dtype == dtype
        with torch.no_grad():
            out = quantized(ids)
            assert out.dtype == dtype and _sqnr(model(ids), out.float()) >= 20
    language_model = LanguageModel().eval()
    quantized = fxq.quantize_dynamic(copy.deepcopy(language_model).to(dtype))
    assert isinstance(quantized.lstm, DynamicLSTM)
    with torch.no_grad():
        out = quantized(_tokens())
        assert out.dtype == dtype and _sqnr(language_model(_tokens()), out.float()) >= 20
