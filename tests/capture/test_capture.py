"""The torch.export front end and capture="auto", on real Hugging Face models."""

import pytest
import torch
import transformers
from torch import nn

import fxq
from fxq.annotation import info
from fxq.metrics import sqnr_db
from tests.dump.helpers import dump_args


def _bert(layers=12, seed=0):
    torch.manual_seed(seed)
    return transformers.BertModel(transformers.BertConfig(num_hidden_layers=layers)).eval()


def _batches(count, seed, length=128):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 30522, (1, length), generator=g), torch.ones(1, length, dtype=torch.long))
            for _ in range(count)]


def test_hf_bert_base_static_int8_by_auto_capture_without_changes():
    model = _bert()
    quantized = fxq.quantize(model, _batches(1, 0)[0], _batches(2, 1), backend="x86", capture="auto")
    how = quantized.meta["fxq_capture"]
    assert how["how"] == "export" and "symbolic tracing failed" in how["why"]
    assert quantized.meta["fxq_recipe"]["name"] == "transformer"
    kinds = [info(n).lowered_to for n in quantized.graph.nodes]
    # every Linear int8; those read only by float ops (the recipe keeps residual adds, layer norms float) return float
    assert kinds.count("QuantizedLinearFloatOutput") + kinds.count("QuantizedLinear") == 73
    assert kinds.count("QuantizedLinearFloatOutput") >= 72 and kinds.count("quantized.layer_norm") == 0
    with torch.no_grad():
        reference = torch.cat([model(*b).last_hidden_state.flatten() for b in _batches(2, 2)])
        got = torch.cat([quantized(*b).last_hidden_state.flatten() for b in _batches(2, 2)])
    assert sqnr_db(reference, got) >= 25  # 28.6 measured; 23.9 with recipe="none"
    with torch.no_grad():  # dynamic dimensions: another length runs too (a batch of 1 is fixed by export)
        ids = torch.randint(0, 30522, (1, 40))
        assert quantized(ids, torch.ones(1, 40, dtype=torch.long)).last_hidden_state.shape == (1, 40, 768)


def test_module_name_rule_with_an_hf_path_takes_effect_on_the_exported_graph():
    model = _bert(layers=2)
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name("encoder.layer.0.output.dense", None)
    quantized = fxq.quantize(model, _batches(1, 0, 32)[0], _batches(2, 1, 32), backend="x86", capture="export",
                             qconfig_mapping=mapping)
    rows = [row for row in fxq.inspect(quantized) if row.concept == "linear"]
    by_path = {info(n).module_path: info(n) for n in quantized.graph.nodes if info(n).concept == "linear"}
    excluded = by_path["encoder.layer.0.output.dense"]
    assert excluded.qconfig_rule == "module_name('encoder.layer.0.output.dense')" and excluded.float_reason
    assert by_path["encoder.layer.1.output.dense"].lowered_to == "QuantizedLinearFloatOutput"
    assert any(row.rule == "module_name('encoder.layer.0.output.dense')" and row.category == "float" for row in rows)


def tiny_bert():
    """A factory for the dump tool: a 1-layer BertModel."""
    return _bert(layers=1)


def test_dump_tool_captures_with_export_and_shows_the_rule():
    from fxq.tools.dump import build_dump, render

    args = dump_args("tests.capture.test_capture:tiny_bert", "--input-shape", "1,16", "--input-dtype", "int64",
                     "--capture", "auto", "--keep-float", "encoder.layer.0.output.dense")
    result = build_dump(args)
    text = render(result, "text")
    assert "module_name('encoder.layer.0.output.dense')" in text
    assert result.graph.meta["fxq_capture"]["how"] == "export"


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent Python: neither front end can capture it
            return x * 2
        return x - 1


def test_a_model_neither_front_end_captures_gets_one_error_with_both_failures():
    with pytest.raises(fxq.TraceError) as caught:
        fxq.prepare(_Branchy(), fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 3),), capture="auto")
    message = str(caught.value)
    assert "neither front end" in message and "fx:" in message and "export:" in message
    assert "torch.cond" in message and "fxq.quantize_dynamic(model)" in message  # the ways forward


def test_auto_keeps_symbolic_tracing_when_it_captures_everything():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),), capture="auto")
    assert prepared.meta["fxq_capture"] == {"how": "fx", "why": "symbolic tracing captured the whole model"}


def test_unknown_capture_and_fx_only_options_are_errors():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    with pytest.raises(fxq.ConfigError, match="capture='jit'"):
        fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),), capture="jit")
    with pytest.raises(fxq.ConfigError, match="symbolic tracing only"):
        fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),), capture="export",
                    leaf_modules=["0"])


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        y = torch.add(self.fc1(x), x)
        return torch.relu(torch.add(self.fc2(y), y))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = _Block(), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.block(x))


def test_rules_resolve_the_same_on_traced_and_exported_graphs():
    qconfig = fxq.get_default_qconfig("x86")
    mapping = (fxq.QConfigMapping().set_global(qconfig).set_object_type(torch.add, qconfig)
               .set_object_type(nn.Linear, qconfig).set_module_name("block.fc2", None)
               .set_module_name_object_type_order("block", torch.add, 0, None)
               .set_module_name_regex(r"hea.", qconfig))
    resolved = {}
    for capture in ("fx", "export"):
        prepared = fxq.prepare(_Net().eval(), mapping, (torch.randn(2, 8),), capture=capture)
        resolved[capture] = [(info(n).module_path, info(n).concept, info(n).qconfig_rule)
                             for n in prepared.graph.nodes
                             if info(n).concept in ("linear", "add", "relu")]
    assert resolved["fx"] == resolved["export"]
    rules = {rule for _, _, rule in resolved["export"]}
    assert {"module_name('block.fc2')", "module_name_object_type_order('block', torch.add, 0)",
            "object_type(Linear)", "module_name_regex('hea.')"} <= rules


def test_an_export_from_a_batch_1_example_takes_any_batch():
    """export fixes dimensions of size 1; fxq exports batch-1 examples at batch 2, so the model stays general."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    calibration = [(torch.randn(16, 8, generator=torch.Generator().manual_seed(seed)),) for seed in range(4)]
    quantized = fxq.quantize(model, (torch.randn(1, 8),), calibration, capture="export", runtime="graph")
    for batch in (1, 5):
        x = torch.randn(batch, 8)
        with torch.no_grad():
            assert sqnr_db(model(x), quantized(x)) > 20


class _NeedsBatchOne(nn.Module):
    def forward(self, x):
        return x.reshape(8) * 2  # only a batch of one fits


def test_a_model_that_needs_batch_1_is_exported_as_given():
    captured = fxq.capture.capture(_NeedsBatchOne(), (torch.randn(1, 8),), "export")
    assert torch.equal(captured.graph_module(torch.ones(1, 8)), torch.full((8,), 2.0))


def test_images_are_exported_at_their_size_for_any_batch():
    """Heights and widths stay as given (symbolic ones made a tiny Swin's export take minutes); the batch and the
    dimensions of other inputs stay free."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
    captured = fxq.capture.capture(model, (torch.randn(1, 3, 16, 16),), "export")
    image = next(n for n in captured.graph_module.graph.nodes if n.op == "placeholder").meta["val"]
    assert type(image.shape[0]) is torch.SymInt and all(type(size) is int for size in image.shape[1:])
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(captured.graph_module(x), model(x), atol=1e-6)
    tokens = fxq.capture.capture(nn.Embedding(10, 4), (torch.randint(0, 10, (2, 7)),), "export")
    ids = next(n for n in tokens.graph_module.graph.nodes if n.op == "placeholder" and n.name != "weight")
    assert all(type(size) is torch.SymInt for size in ids.meta["val"].shape)
