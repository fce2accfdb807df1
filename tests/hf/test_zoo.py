"""Hugging Face families, unchanged, through static (capture="auto"; twelve families), dynamic and weight-only
quantization (fifteen: all but ResNet, which has no Linear), each against its float model on held-out
inputs."""

import warnings

import pytest
import torch
from torch import nn

import fxq
from fxq.metrics import sqnr_db
from tests.hf.zoo import DECODERS, FAMILIES, inputs, main_output, model


def _sqnr(float_model, quantized, family):
    x = inputs(family, seed=99)
    with torch.no_grad():
        return sqnr_db(main_output(float_model(x)), main_output(quantized(x)))


# twelve of the families (export takes 1-3 s a model); RoBERTa, ELECTRA and Mistral share their graphs' shape with
# BERT and Llama, and ResNet is the CNN case the rest of the suite covers
STATIC = ["bert", "distilbert", "albert", "t5-encoder", "llama", "qwen2", "phi", "phi3", "opt", "gpt2", "vit",
          "convnext"]


@pytest.mark.parametrize("family", STATIC)
def test_static_int8_by_auto_capture(family):
    float_model = model(family)
    quantized = fxq.quantize(float_model, (inputs(family, 0),), [(inputs(family, seed),) for seed in range(1, 5)],
                             capture="auto", runtime="graph")  # the runtime choice is tested elsewhere
    assert quantized.meta["fxq_capture"]["how"] == "export"  # none of them traces symbolically
    assert fxq.report_of(quantized).quantized
    assert _sqnr(float_model, quantized, family) >= 20  # measured 29.0 (llama) to 64.0 (distilbert)


@pytest.mark.parametrize("family", [family for family in FAMILIES if family != "resnet"])  # resnet: no Linear
@pytest.mark.parametrize("spec, min_db", [(None, 30), ({nn.Linear: fxq.WeightOnly(8, 32)}, 30),
                                          ({nn.Linear: fxq.WeightOnly(4, 32)}, 15)],
                         ids=["dynamic", "weight-only-int8", "weight-only-int4"])
def test_dynamic_and_weight_only_by_module_swap(family, spec, min_db):
    float_model = model(family)
    quantized = fxq.quantize_dynamic(float_model, spec)
    assert sum(fxq.report_of(quantized).converted.values()) > 0
    assert _sqnr(float_model, quantized, family) >= min_db


def test_a_model_without_linears_says_dynamic_quantization_converted_nothing():
    with pytest.warns(fxq.FxqWarning, match="converted nothing"):
        fxq.quantize_dynamic(model("resnet"), {nn.Linear})


@pytest.mark.parametrize("family", DECODERS)
def test_decoders_dynamic_int8_through_the_graph_pipeline(family):
    float_model = model(family)
    dynamic = fxq.qconfig.get_default_dynamic_qconfig(torch.qint8, "x86")
    mapping = fxq.QConfigMapping().set_object_type(nn.Linear, dynamic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = fxq.convert(fxq.prepare(float_model, mapping, (inputs(family, 0),), backend="x86",
                                            capture="auto"))
    assert _sqnr(float_model, quantized, family) >= 30  # measured 35.1-37.2
