"""Tiny random-init configurations of sixteen Hugging Face families (encoders, decoders, an encoder-decoder's
encoder, vision), each with an input maker: what the zoo tests run through every quantization path."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 300
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
_DECODER = dict(_TEXT, vocab_size=VOCAB, num_key_value_heads=2)


def _configs() -> dict:
    t = transformers
    return {
        "bert": (t.BertModel, t.BertConfig(vocab_size=VOCAB, **_TEXT)),
        "distilbert": (t.DistilBertModel, t.DistilBertConfig(vocab_size=VOCAB, dim=64, hidden_dim=128, n_layers=2,
                                                              n_heads=4)),
        "roberta": (t.RobertaModel, t.RobertaConfig(vocab_size=VOCAB, **_TEXT)),
        "electra": (t.ElectraModel, t.ElectraConfig(vocab_size=VOCAB, embedding_size=32, **_TEXT)),
        "albert": (t.AlbertModel, t.AlbertConfig(vocab_size=VOCAB, embedding_size=32, **_TEXT)),
        "t5-encoder": (t.T5EncoderModel, t.T5Config(vocab_size=VOCAB, d_model=64, d_ff=128, num_layers=2,
                                                    num_heads=4, d_kv=16)),
        "llama": (t.LlamaModel, t.LlamaConfig(**_DECODER)),
        "qwen2": (t.Qwen2Model, t.Qwen2Config(**_DECODER)),
        "mistral": (t.MistralModel, t.MistralConfig(**_DECODER)),
        "phi": (t.PhiModel, t.PhiConfig(vocab_size=VOCAB, **_TEXT)),
        "phi3": (t.Phi3Model, t.Phi3Config(pad_token_id=0, **_DECODER)),  # fully rotary: an empty unrotated part
        "opt": (t.OPTModel, t.OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                        num_attention_heads=4, word_embed_proj_dim=64)),  # float position arithmetic
        "gpt2": (t.GPT2Model, t.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                           bos_token_id=0, eos_token_id=0)),
        "vit": (t.ViTModel, t.ViTConfig(image_size=32, patch_size=8, **_TEXT)),
        "convnext": (t.ConvNextModel, t.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)),
        "resnet": (t.ResNetModel, t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                 layer_type="basic")),
    }


FAMILIES = list(_configs())
VISION = {"vit", "convnext", "resnet"}
DECODERS = ["llama", "qwen2", "gpt2"]


def model(family: str) -> torch.nn.Module:
    cls, config = _configs()[family]
    torch.manual_seed(0)
    return cls(config).eval()


def inputs(family: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if family in VISION:
        return torch.randn(2, 3, 32, 32, generator=g)
    return torch.randint(0, VOCAB, (2, 16), generator=g)


def main_output(output) -> torch.Tensor:
    return output.last_hidden_state
