"""Example inputs and calibration batches given as keyword arguments (a tokenizer's dict), decoders captured
without their cache, and the quantized graph called either way."""

import pytest
import torch

import fxq
from fxq.errors import ConfigError
from fxq.metrics import sqnr_db
from fxq.model_inputs import as_positional, split_call
from tests.hf.zoo import VOCAB, model


def _batch(seed, length=16):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - 4:] = 0  # the second sequence is padded
    return {"input_ids": torch.randint(0, VOCAB, (2, length), generator=g), "attention_mask": mask}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dict_examples_and_batches_quantize_a_decoder_that_is_then_called_by_keyword_or_position(family):
    float_model = model(family)
    quantized = fxq.quantize(float_model, _batch(0), [_batch(seed) for seed in range(1, 4)], capture="auto")
    held = _batch(9)
    with torch.no_grad():
        expected = float_model(**held).last_hidden_state
        by_name = quantized(**held).last_hidden_state
        by_position = quantized(held["input_ids"], held["attention_mask"]).last_hidden_state
        shorter = quantized(input_ids=held["input_ids"][:1, :5], attention_mask=held["attention_mask"][:1, :5])
    assert torch.equal(by_name, by_position)
    assert sqnr_db(expected, by_name) >= 20
    assert shorter.last_hidden_state.shape == (1, 5, 64)


def test_a_decoder_is_captured_without_its_cache_and_its_float_model_keeps_its_own():
    float_model = model("llama")
    captured = fxq.capture.capture(float_model, (torch.randint(0, VOCAB, (2, 8)),), "export")
    names = [node.name for node in captured.graph_module.graph.nodes if node.op == "placeholder"]
    assert names == ["input_ids"]
    with torch.no_grad():
        output = captured.graph_module(torch.randint(0, VOCAB, (2, 8)))
        assert output.past_key_values is None
        assert float_model(torch.randint(0, VOCAB, (2, 8))).past_key_values is not None  # not modified


def test_a_cache_the_user_asks_for_is_kept_asked_for():
    with pytest.raises(fxq.TraceError, match="DynamicCache"):  # export cannot return the cache object
        fxq.capture.capture(model("llama"), (torch.randint(0, VOCAB, (2, 8)),), "export",
                            example_kwargs={"use_cache": True})


def test_split_call_accepts_tuples_tensors_and_mappings_only():
    x = torch.zeros(1)
    assert split_call(x) == ((x,), {})
    assert split_call([x, x]) == ((x, x), {})
    assert split_call({"a": x}) == ((), {"a": x})
    with pytest.raises(ConfigError, match="dict of keyword arguments; got int"):
        split_call(3)


def test_keyword_examples_become_the_forward_positional_arguments_with_defaults_between():
    class Three(torch.nn.Module):
        def forward(self, a, b=None, c=None):
            return a

    x = torch.zeros(1)
    assert as_positional(Three(), (x,), {"c": x}, "Three") == (x, None, x)
    with pytest.raises(ConfigError, match="Three: the example inputs do not fit forward"):
        as_positional(Three(), (x,), {"d": x}, "Three")
