"""Static int8 PTQ of the real all-MiniLM-L6-v2 through torch.export: padded batches with attention masks,
mean-pooled sentence embeddings.

Which layers limit it (measured with ``fxq.compare`` on held-out sentences, see the issue note): the FFN
down-projections ``encoder.layer.N.output.dense``. Their input is the GELU output, with a long positive tail,
and their output joins the residual stream, whose few outlier channels set a per-tensor scale that leaves the
others a handful of steps (own SQNR of those layers: about -2 dB). Quantizing every Linear gives a mean cosine
of 0.944; keeping those six float and the other 30 Linears int8 gives 0.994. Quantizing the residual adds and
layer norms too (the default mapping) costs most of the rest: 0.864.
"""

from torch import nn

import fxq
from tests.dynamic.minilm import embed, load_minilm
from tests.dynamic.sentences import SENTENCES

FFN_DOWN = r"encoder\.layer\.\d+\.output\.dense"


class _ByKeyword(nn.Module):
    """The exported model takes positional inputs; ``embed`` passes keywords."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, **_):
        return self.model(input_ids, attention_mask)


def _padded(tokenizer, sentences, batch=8, length=64):
    out = []
    for start in range(0, len(sentences), batch):
        encoded = tokenizer(sentences[start:start + batch], padding="max_length", max_length=length,
                            truncation=True, return_tensors="pt")
        out.append((encoded["input_ids"], encoded["attention_mask"]))
    return out


def test_static_int8_minilm_sentence_embeddings():
    tokenizer, model = load_minilm()
    calibration = _padded(tokenizer, SENTENCES[:24])
    mapping = fxq.QConfigMapping().set_object_type(nn.Linear, fxq.get_default_qconfig("x86")) \
        .set_module_name_regex(FFN_DOWN, None)
    quantized = fxq.quantize(model, calibration[0], calibration, backend="x86", capture="auto",
                             qconfig_mapping=mapping)
    assert quantized.meta["fxq_capture"]["how"] == "export"
    kinds = [fxq.info(n).lowered_to for n in quantized.graph.nodes]
    assert kinds.count("QuantizedLinear") == 30
    reference = embed(model, tokenizer, SENTENCES)
    got = embed(_ByKeyword(quantized), tokenizer, SENTENCES)  # other batch sizes and lengths than calibration
    cosine = (reference * got).sum(1)
    assert len(SENTENCES) >= 50 and cosine.mean() >= 0.95, f"mean {cosine.mean():.4f}, min {cosine.min():.4f}"


def test_compare_names_the_ffn_down_projections_as_the_limit():
    tokenizer, model = load_minilm()
    calibration = _padded(tokenizer, SENTENCES[:24])
    mapping = fxq.QConfigMapping().set_object_type(nn.Linear, fxq.get_default_qconfig("x86"))
    quantized = fxq.quantize(model, calibration[0], calibration, backend="x86", capture="export",
                             qconfig_mapping=mapping)
    comparison = fxq.compare(model, quantized, _padded(tokenizer, SENTENCES[24:40]))
    worst_linears = [layer.module_path for layer in comparison.layers if layer.concept == "linear"][:3]
    assert any(path.endswith("output.dense") and ".attention." not in path for path in worst_linears), \
        str(comparison)
