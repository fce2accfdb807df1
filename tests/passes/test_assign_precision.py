"""assign-precision: a per-layer precision plan picks each planned layer's kernel, the dump says the plan chose
it, the same plan written as QConfigMapping rules gives the same model, and plans that cannot run are refused."""

import math

import pytest
import torch

import fxq
from fxq.annotation import info
from fxq.nn.quantized import QuantizedLinear
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.precision import PrecisionPlan, qconfig_for
from tests.models import calibration_batches, eval_batches, example_inputs, make_model, sqnr

PLAN = {"fc1": "fp16", "fc2": "int8-dynamic", "fc3": "float"}


def _quantized(name="mlp", plan=None, mapping=None, backend="x86"):
    return fxq.quantize(make_model(name), example_inputs(name), calibration_batches(name, n=2), backend=backend,
                        qconfig_mapping=mapping, precision=plan, runtime="graph")


def _by_module(gm):
    return {info(n).module_path: n for n in gm.graph.nodes if info(n).concept is not None}


def test_each_planned_layer_gets_its_kernel_and_the_dump_names_the_plan():
    quantized = _quantized(plan=PLAN)
    modules = dict(quantized.named_modules())
    nodes = _by_module(quantized)
    assert info(nodes["fc1"]).precision == "dynamic float16"
    assert info(nodes["fc2"]).precision == "dynamic qint8"
    assert isinstance(modules["fc3"], torch.nn.Linear) and "precision plan (user)" in info(nodes["fc3"]).float_reason
    rules = {row.name: row.rule for row in fxq.inspect(quantized)}
    assert rules["fc1"] == "precision(fp16, user)" and rules["fc3"] == "precision(float, user)"
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        assert torch.isfinite(quantized(*x)).all()


def test_no_plan_changes_nothing():
    plain, empty = _quantized(), _quantized(plan={})
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        assert torch.equal(plain(*x), empty(*x))
    assert plain.code == empty.code


def test_the_plan_as_mapping_rules_gives_the_same_model():
    plan = PrecisionPlan({"fc1": "w4a8", "fc2": "float", "fc3": "int8-dynamic"})
    planned = _quantized(plan=plan)
    mapping = plan.to_mapping(fxq.get_default_qconfig_mapping("x86"), "x86")
    by_rules = _quantized(mapping=mapping)
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        assert torch.equal(planned(*x), by_rules(*x))
    assert planned.code == by_rules.code


def test_w4a8_keeps_4_bit_weights_in_int8_kernels():
    quantized = _quantized(plan={"fc2": "w4a8"})
    fc2 = dict(quantized.named_modules())["fc2"]
    assert isinstance(fc2, QuantizedLinear)
    values = fc2.qweight.int_repr()
    assert values.min() >= -8 and values.max() <= 7 and len(values.unique()) > 8


def test_explicit_mapping_rules_win_over_the_plan_and_say_so():
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name("fc1", None)
    quantized = _quantized(plan={"fc1": "int8"}, mapping=mapping)
    node = _by_module(quantized)["fc1"]
    assert info(node).qconfig_rule == "module_name('fc1')"
    assert any(name == "assign-precision" and "gives way" in why for name, why in info(node).declined)


def test_plans_that_cannot_run_are_refused_with_the_fix():
    with pytest.raises(fxq.ConfigError, match="unknown precision 'int4'; use one of int8"):
        PrecisionPlan({"fc1": "int4"})
    with pytest.raises(fxq.ConfigError, match=r"module 'conv1' \(conv2d.*'fp16'.*Linear layers only"):
        _quantized("resnet", plan={"conv1": "fp16"})
    with pytest.raises(fxq.ConfigError, match="names module 'fc9' \\(did you mean .*'fc1'.*does not have"):
        _quantized(plan={"fc9": "float"})


def test_qconfig_for_int8_starts_from_the_mappings_global_qconfig():
    base = fxq.get_default_qconfig("qnnpack")
    assert qconfig_for("int8", "x86", base) is base
    assert qconfig_for("float", "x86") is None


def test_dynamic_and_fp16_plans_run_their_kernels_on_an_exported_graph_too():
    """torch.export gives linear calls with constant weights, not modules: they become dynamic modules all the
    same (and TorchScript runs them), rather than staying float."""
    model = make_model("mlp")
    quantized = fxq.quantize(model, example_inputs("mlp"), calibration_batches("mlp", n=2), backend="x86",
                             capture="export", precision={"fc1": "int8-dynamic", "fc2": "fp16"},
                             runtime="torchscript")
    modules = dict(quantized.named_modules())
    kinds = {info(n).module_path: modules[n.target] for n in quantized.graph.nodes if n.op == "call_module"
             and info(n).module_path in ("fc1", "fc2")}
    assert isinstance(kinds["fc1"], DynamicLinear) and not kinds["fc1"].fp16
    assert isinstance(kinds["fc2"], DynamicLinear) and kinds["fc2"].fp16
    assert quantized.meta["fxq_runtime"]["name"] == "torchscript"
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        assert sqnr(model(*x), quantized(*x)) > 25
    assert not any(n.op == "get_attr" and "fc1" in n.target for n in quantized.graph.nodes)  # no float copy left


class _NormThenLinear(torch.nn.Module):
    """A layer norm reading the model's input (so its input and output are both the planned layer's
    activations) and a linear after it."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc = torch.nn.LayerNorm(64), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.norm(x))


def _norm_model():
    torch.manual_seed(0)
    return _NormThenLinear().eval()


def _quantized_norm(precision, backend="reference", mapping=None):
    return fxq.quantize(_norm_model(), example_inputs("mlp"), calibration_batches("mlp", n=2), backend=backend,
                        qconfig_mapping=mapping, precision=None if precision is None else {"norm": precision},
                        runtime="graph")


def _node_values(gm, *inputs):
    """Every node's value (quantized tensors as they are) on ``inputs``."""
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            values[node] = super().run_node(node)
            return values[node]

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return values


def _quantized_output(gm, path):
    """The (clamp ->) quantize -> dequantize chain after module ``path``'s op: what later ops read of it."""
    node = _by_module(gm)[path]
    chain = []
    while len(node.users) == 1 and info(next(iter(node.users))).lowered_to in ("quantize", "dequantize"):
        node = next(iter(node.users))
        chain.append(node)
        if info(node).lowered_to == "dequantize":  # an int8 reader's own quantize may follow: not this value's
            break
    return chain


def test_int16_on_the_reference_backend_quantizes_activations_to_16_bits():
    """W8A16 is simulated honestly: the planned layer's output is 16-bit (SQNR ~50 dB above int8's), its levels
    lie in [-32768, 32767] even for inputs far beyond calibration, and the dump says int16."""
    float_model = _norm_model()
    x = eval_batches("mlp", n=1)[0][0]
    with torch.no_grad():
        expected = float_model.norm(x)
    errors = {}
    for precision in ("int8", "int16"):
        quantized = _quantized_norm(precision)
        values = _node_values(quantized, x)
        errors[precision] = sqnr(expected, values[_quantized_output(quantized, "norm")[-1]])
    assert errors["int16"] >= errors["int8"] + 30, errors

    quantized = _quantized_norm("int16")
    chain = _quantized_output(quantized, "norm")
    assert [n.target for n in chain] == [torch.clamp, torch.quantize_per_tensor, "dequantize"]
    quantizes = [n for n in quantized.graph.nodes if n.target is torch.quantize_per_tensor and n.args[3] == torch.qint32]
    assert len(quantizes) == 2  # the norm's input (the model's input, observed with its qconfig) and its output
    values = _node_values(quantized, x)
    for node in quantizes:
        levels = values[node].int_repr()
        assert levels.min() >= -32768 and levels.max() <= 32767 and len(levels.unique()) > 256
    # ten times what calibration saw: torch's qint32 quantize alone would store levels up to ~10 x 32767
    levels = _node_values(quantized, 10 * x)[quantizes[0]].int_repr()
    assert levels.min() == -32768 and levels.max() == 32767

    rows = {row.name: row for row in fxq.inspect(quantized)}
    norm = _by_module(quantized)["norm"].name
    assert rows[norm].qdtype == "int16" and rows[norm].rule == "precision(int16, user)"
    assert info(_by_module(quantized)["norm"]).qparams["output"]["storage"] == "qint32"


def test_the_int16_plan_as_mapping_rules_gives_the_same_model():
    plan = PrecisionPlan({"norm": "int16"})
    planned = _quantized_norm("int16")
    by_rules = _quantized_norm(None, mapping=plan.to_mapping(fxq.get_default_qconfig_mapping("reference"),
                                                              "reference"))
    x = eval_batches("mlp", n=1)[0]
    with torch.no_grad():
        assert torch.equal(planned(*x), by_rules(*x))
    assert planned.code == by_rules.code
    qconfig = qconfig_for("int16", "reference")
    observer = qconfig.activation()
    assert (observer.dtype, observer.quant_min, observer.quant_max) == (torch.qint32, -32768, 32767)
    assert qconfig.weight == qconfig_for("int8", "reference").weight  # int8 weights, as int8 has them


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_int16_on_a_native_backend_is_refused_with_the_fix(backend):
    fix = r"no int16 kernel.*backend='reference' to simulate.*'float', or 'int8-dynamic' \(Linear\)"
    with pytest.raises(fxq.ConfigError, match=r"module 'fc2' \(linear_relu, node 'fc2'\).*" + fix):
        _quantized(plan={"fc2": "int16"}, backend=backend)
    with pytest.raises(fxq.ConfigError, match=r"module 'fc2'.*" + fix):
        PrecisionPlan({"fc2": "int16"}).to_mapping(fxq.get_default_qconfig_mapping(backend), backend)


class _NormThenLinears(torch.nn.Module):
    """A layer norm (its default weight 1 and bias 0 quantize without error, so its output's error is the 16-bit
    rounding of its input and output alone) read by two linears, and a linear reading the model's input too."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(64)
        self.fc, self.fc2, self.fc0 = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10), torch.nn.Linear(64, 10)

    def forward(self, x):
        h = self.norm(x)
        return self.fc(h), self.fc2(h), self.fc0(x)


def _linears_model():
    torch.manual_seed(0)
    return _NormThenLinears().eval()


def _quantized_linears(plan):
    return fxq.quantize(_linears_model(), example_inputs("mlp"), calibration_batches("mlp", n=2),
                        backend="reference", precision=plan, runtime="graph")


def _reads(gm, path):
    """The quantize whose dequantized value module ``path``'s op reads, its (scale, zero point, dtype)."""
    quantize = _by_module(gm)[path].args[0].args[0]
    assert quantize.target is torch.quantize_per_tensor
    return quantize, quantize.args[1:]


def test_an_int8_layer_after_an_int16_one_reads_the_value_at_8_bits():
    """Each reader quantizes the int16 value at its own precision: the int8 linears get an 8-bit observer of their
    own (one, shared by both, after the 16-bit one), with the qparams an all-int8 model gives them; so does the
    int8 linear reading the model's input, which the int16 norm observes at 16 bits."""
    quantized, int8 = _quantized_linears({"norm": "int16"}), _quantized_linears({})
    for path in ("fc", "fc2", "fc0"):
        quantize, qparams = _reads(quantized, path)
        assert qparams == _reads(int8, path)[1] and qparams[2] == torch.quint8
        dequantize_16 = quantize.args[0]  # the 8-bit quantize reads the 16-bit value
        assert dequantize_16.target == "dequantize" and dequantize_16.args[0].args[3] == torch.qint32
    assert _reads(quantized, "fc")[0] is _reads(quantized, "fc2")[0]
    assert _reads(quantized, "norm")[1][2] == torch.qint32

    prepared = fxq.prepare(_linears_model(), fxq.get_default_qconfig_mapping("reference"), example_inputs("mlp"),
                           backend="reference", precision={"norm": "int16"})
    nodes = _by_module(prepared)
    observers = dict(prepared.named_modules())
    fc_input = info(nodes["fc"]).observers["input0"]
    assert fc_input != info(nodes["norm"]).observers["output"] and fc_input == info(nodes["fc2"]).observers["input0"]
    assert (observers[fc_input].dtype, observers[fc_input].quant_max) == (torch.quint8, 255)
    assert observers[info(nodes["norm"]).observers["output"]].dtype == torch.qint32


def test_an_int16_layer_after_an_int8_one_reads_the_int8_value():
    """The other way round the value already has the coarser levels: the int16 layer reads it as it is."""
    quantized, int8 = _quantized_norm_reversed(), _quantized_norm(None)
    assert quantized.code.count("torch.qint32") == 0  # the fc's output is float: nothing is quantized at 16 bits
    assert _reads(quantized, "fc") == (_reads(quantized, "fc")[0], _reads(int8, "fc")[1])
    prepared = fxq.prepare(_norm_model(), fxq.get_default_qconfig_mapping("reference"), example_inputs("mlp"),
                           backend="reference", precision={"fc": "int16"})
    nodes = _by_module(prepared)
    assert info(nodes["fc"]).observers["input0"] == info(nodes["norm"]).observers["output"]


def _quantized_norm_reversed():
    return fxq.quantize(_norm_model(), example_inputs("mlp"), calibration_batches("mlp", n=2), backend="reference",
                        precision={"fc": "int16"}, runtime="graph")


def test_an_int8_layer_after_an_int16_one_is_charged_its_own_8_bit_input():
    """compare's own error of the int8 linear after the int16 norm is what the linear costs in an all-int8 model:
    its 8-bit input and int8 weights on the exact float input (~42 dB; ~48 when it read the 16-bit value)."""
    batches = calibration_batches("mlp", n=2)  # no value beyond calibration: no clipping hides the rounding
    float_model, int8 = _linears_model(), _quantized_linears({})
    _, qparams = _reads(int8, "fc")
    x = torch.cat([batch[0] for batch in batches])
    with torch.no_grad():
        normed = float_model.norm(x)
        direct = sqnr(float_model.fc(normed), int8.fc(torch.quantize_per_tensor(normed, *qparams).dequantize()))
    layers = {layer.module_path: layer for layer in fxq.compare(float_model, _quantized_linears({"norm": "int16"}),
                                                                batches).layers}
    assert abs(layers["fc"].own_sqnr_db - direct) < 2, (layers["fc"].own_sqnr_db, direct)
    assert abs(layers["fc2"].own_sqnr_db - layers["fc"].own_sqnr_db) < 6


def test_compare_measures_an_int16_output_after_its_16_bit_rounding():
    """The int16 norm's value is its 16-bit quantize (the clamp before it only bounds the levels): compare
    reports the SQNR measured there (~86 dB), not the unrounded value's (~89 dB)."""
    batches = calibration_batches("mlp", n=2)
    float_model, quantized = _linears_model(), _quantized_linears({"norm": "int16"})
    quantize = next(n for n in _quantized_output(quantized, "norm") if n.target is torch.quantize_per_tensor)
    signal = noise = 0.0
    for (x,) in batches:
        with torch.no_grad():
            expected = float_model.norm(x).double()
        got = _node_values(quantized, x)[quantize].dequantize().double()
        signal, noise = signal + float(expected.square().sum()), noise + float((expected - got).square().sum())
    direct = 10 * math.log10(signal / noise)
    layers = {layer.module_path: layer for layer in fxq.compare(float_model, quantized, batches).layers}
    norm = layers["norm"]
    assert abs(norm.sqnr_db - direct) < 0.5, (norm.sqnr_db, direct)
    assert norm.node == _by_module(quantized)["norm"].name and norm.concept == "layer_norm"
