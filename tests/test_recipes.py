"""Recipes: chosen from the graph, recorded with the reason, and never over a user's explicit rule."""

import warnings

import pytest
import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.errors import FxqWarning
from fxq.recipes import Recipe
from tests.models import calibration_batches, eval_batches, example_inputs, make_model, sqnr


def _prepare(name, mapping=None, **options):
    mapping = mapping if mapping is not None else fxq.get_default_qconfig_mapping("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        return fxq.prepare(make_model(name), mapping, example_inputs(name), backend="x86", **options)


def _by_concept(gm, concept):
    return [info(n) for n in gm.graph.nodes if info(n).concept == concept]


@pytest.mark.parametrize("name, recipe, because", [("transformer", "transformer", "attention"),
                                                   ("resnet", "cnn", "convolution"),
                                                   ("mlp", "none", "neither")])
def test_auto_picks_the_recipe_from_the_graph_and_says_why(name, recipe, because):
    chosen = _prepare(name).meta["fxq_recipe"]
    assert chosen["name"] == recipe and because in chosen["why"]


def test_transformer_recipe_keeps_residual_adds_and_layer_norms_float_and_names_itself():
    prepared = _prepare("transformer")
    for record in _by_concept(prepared, "layer_norm") + _by_concept(prepared, "add"):
        assert record.qconfig is None and record.qconfig_rule == "recipe(transformer)"
        assert record.float_reason.startswith("the transformer recipe keeps")
    assert all(record.qconfig is not None for record in _by_concept(prepared, "linear"))


def test_an_explicit_rule_wins_over_the_recipe():
    mapping = fxq.get_default_qconfig_mapping("x86").set_object_type(nn.LayerNorm, fxq.get_default_qconfig("x86"))
    prepared = _prepare("transformer", mapping)
    norms = _by_concept(prepared, "layer_norm")
    assert norms and all(r.qconfig is not None and r.qconfig_rule == "object_type(LayerNorm)" for r in norms)
    assert all(r.qconfig is None for r in _by_concept(prepared, "add"))  # no rule of the user's names adds


def test_recipe_none_and_a_recipe_object_are_taken_as_given():
    assert all(r.qconfig is not None for r in _by_concept(_prepare("transformer", recipe="none"), "layer_norm"))
    custom = Recipe("norms-float", float_concepts=(("layer_norm", "my reason"),))
    prepared = _prepare("transformer", recipe=custom)
    assert prepared.meta["fxq_recipe"]["name"] == "norms-float"
    assert all(r.float_reason.endswith("my reason") for r in _by_concept(prepared, "layer_norm"))
    assert all(r.qconfig is not None for r in _by_concept(prepared, "add"))


def test_an_unknown_recipe_is_an_error_listing_the_known_ones():
    with pytest.raises(fxq.ConfigError, match="unknown recipe 'bert'.*'transformer'"):
        _prepare("transformer", recipe="bert")


def test_transformer_block_keeps_accuracy_by_defaults():
    model = make_model("transformer")
    quantized = fxq.quantize(model, example_inputs("transformer"), calibration_batches("transformer"))
    with torch.no_grad():
        reference = torch.cat([model(*batch) for batch in eval_batches("transformer")])
        got = torch.cat([quantized(*batch) for batch in eval_batches("transformer")])
    assert sqnr(reference, got) >= 28  # 48 dB measured; 34 dB with recipe="none"


def test_cnn_recipe_corrects_biases_and_leaves_no_statistics_behind():
    model = make_model("resnet")
    quantized = fxq.quantize(model, example_inputs("resnet"), calibration_batches("resnet"))
    assert quantized.meta["fxq_recipe"]["name"] == "cnn"
    corrected = [info(n) for n in quantized.graph.nodes if "bias_correction" in info(n).qparams]
    assert len(corrected) >= 6 and all(r.lowered_to.startswith("Quantized") for r in corrected)
    rows = [row for row in fxq.inspect(quantized) if row.weight]
    assert rows and all("bias corrected (max" in row.weight for row in rows)  # the dump shows the correction
    baseline = fxq.quantize(model, example_inputs("resnet"), calibration_batches("resnet"), recipe="none")
    with torch.no_grad():
        reference = torch.cat([model(*batch) for batch in eval_batches("resnet")])
        gain = sqnr(reference, torch.cat([quantized(*b) for b in eval_batches("resnet")])) - \
            sqnr(reference, torch.cat([baseline(*b) for b in eval_batches("resnet")]))
    assert gain >= 1.5  # measured: 39.3 -> 42.8 dB


def test_statistics_recorded_but_never_read_do_not_block_native_kernels():
    from fxq.statistics import ChannelStatistics

    recorder_only = Recipe("record-only", prepare_passes=("record-input-statistics",))
    quantized = fxq.quantize(make_model("resnet"), example_inputs("resnet"), calibration_batches("resnet"),
                             recipe=recorder_only)
    assert not any(isinstance(m, ChannelStatistics) for m in quantized.modules())
    convs = [info(n).lowered_to for n in quantized.graph.nodes if (info(n).concept or "").startswith("conv")]
    assert convs and all(kind.startswith("QuantizedConv") for kind in convs)


class _LlamaStyleRMSNorm(nn.Module):
    """An RMS norm written out as Hugging Face writes it: graphs see pow, mean, rsqrt and mul."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


class _RMSBlock(nn.Module):
    """A pre-norm decoder block: RMS norms (one written out, one ``nn.RMSNorm``), attention, a gated MLP."""

    def __init__(self, width=32):
        super().__init__()
        self.attention_norm, self.mlp_norm = _LlamaStyleRMSNorm(width), nn.RMSNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.gate, self.up, self.down = nn.Linear(width, 64), nn.Linear(width, 64), nn.Linear(64, width)

    def forward(self, x):
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        x = x + self.out(torch.softmax(q @ k.transpose(-1, -2) / 32 ** 0.5, dim=-1) @ v)
        h = self.mlp_norm(x)
        return x + self.down(torch.relu(self.gate(h)) * self.up(h))


def _rms_prepared(mapping=None):
    torch.manual_seed(0)
    mapping = mapping if mapping is not None else fxq.get_default_qconfig_mapping("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        return fxq.prepare(_RMSBlock().eval(), mapping, (torch.randn(2, 8, 32),), backend="x86")


def _in_norms(prepared):
    """The records of the ops inside the norms (observers inserted there have no rule)."""
    return [info(n) for n in prepared.graph.nodes if info(n).module_path in ("attention_norm", "mlp_norm")
            and info(n).qconfig_rule is not None]


def test_rms_norms_count_as_norms_and_the_transformer_recipe_keeps_their_ops_float():
    prepared = _rms_prepared()
    assert prepared.meta["fxq_recipe"]["name"] == "transformer"
    assert "2 layer norm(s)" in prepared.meta["fxq_recipe"]["why"]
    in_norms = _in_norms(prepared)
    assert any(record.concept == "mul" for record in in_norms)  # ops the backend could run in int8
    for record in in_norms:
        assert record.qconfig is None and record.qconfig_rule == "recipe(transformer)"
        assert "RMSNorm float" in record.float_reason
    assert all(record.qconfig is not None for record in _by_concept(prepared, "linear"))
    gate_product = [r for r in _by_concept(prepared, "mul") if r.module_path == ""]
    assert gate_product and all(r.qconfig is not None for r in gate_product)  # outside the norms: as before


def test_an_explicit_rule_wins_over_the_recipe_inside_rms_norms_too():
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name("attention_norm", fxq.get_default_qconfig("x86"))
    in_norms = _in_norms(_rms_prepared(mapping))
    chosen = [r for r in in_norms if r.module_path == "attention_norm"]
    assert chosen and all(r.qconfig is not None and r.qconfig_rule == "module_name('attention_norm')"
                          for r in chosen)
    assert all(r.qconfig is None for r in in_norms if r.module_path == "mlp_norm")


class FusedProjection(nn.Module):
    """A fused query/key/value projection split by slicing, as exported graphs spell it (Falcon, GPT-2)."""

    def __init__(self):
        super().__init__()
        self.qkv, self.norm, self.out = nn.Linear(16, 48), nn.LayerNorm(16), nn.Linear(16, 16)

    def forward(self, x):
        qkv = self.qkv(self.norm(x))
        q, k, v = qkv[..., :16], qkv[..., 16:32], qkv[..., 32:]
        attention = torch.softmax(q @ k.transpose(-2, -1) / 4, -1) @ v
        return x + self.out(attention)


def test_the_transformer_recipe_keeps_an_exported_graphs_slices_float():
    model, x = FusedProjection().eval(), torch.randn(2, 5, 16)
    prepared = fxq.prepare(model, None, (x,), backend="x86", capture="export")
    slices = _by_concept(prepared, "slice")
    assert prepared.meta["fxq_recipe"]["name"] == "transformer" and len(slices) == 3
    for record in slices:
        assert record.qconfig is None and record.qconfig_rule == "recipe(transformer)"
        assert "slices split fused projections" in record.float_reason
