"""quantize_dynamic's decoder settings ("int8", "int4") on a causal LM: every Linear (the LM head too) and the
embedding converted, the model still generates, its logits stay close to float."""

import pytest
import torch

import fxq
from fxq.errors import ConfigError
from fxq.metrics import sqnr_db
from fxq.nn.quantized import weight_only_kernels
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from fxq.nn.quantized.embedding import QuantizedEmbedding
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear
from tests.hf.zoo import VOCAB, transformers


def _causal_lm():
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                      bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("preset, linear, min_db", [("int8", DynamicLinear, 25), ("int4", WeightOnlyLinear, 10)])
def test_a_causal_lm_quantized_by_preset_generates_with_logits_close_to_float(preset, linear, min_db):
    model = _causal_lm()
    quantized = fxq.quantize_dynamic(model, preset)
    assert isinstance(quantized.lm_head, linear) and isinstance(quantized.model.embed_tokens, QuantizedEmbedding)
    assert not any(isinstance(module, torch.nn.Linear) for module in quantized.modules())
    if preset == "int4":  # the 300-row LM head fits fxq's kernel (AVX2), not torch's (rows a multiple of 16)
        assert quantized.model.layers[0].mlp.up_proj.uses_kernel
        assert quantized.lm_head.uses_kernel == weight_only_kernels.available()
    prompt = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert sqnr_db(model(prompt).logits, quantized(prompt).logits) >= min_db  # measured 31.4 and 15.6
    generated = quantized.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert generated.shape == (1, 20) and torch.equal(generated[:, :12], prompt)


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="the named settings are 'int8', 'int4'"):
        fxq.quantize_dynamic(torch.nn.Linear(4, 4), "int3")
