"""mask-padding: with a padding mask among the inputs, observers record real tokens only."""

import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.recipes import TRANSFORMER, Recipe
from tests.models import sqnr


class TinyEncoder(nn.Module):
    """Token 0 is padding, embedded far from the real tokens; ``types`` is 0/1 too but never reaches the mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.types = nn.Embedding(50, 16), nn.Embedding(2, 16)
        with torch.no_grad():
            self.emb.weight[0] = 40.0
        self.q, self.k, self.v, self.o, self.ff = (nn.Linear(16, 16) for _ in range(5))
        self.ln = nn.LayerNorm(16)

    def forward(self, ids, mask, types):
        x = self.emb(ids) + self.types(types)
        scores = self.q(x) @ self.k(x).transpose(1, 2) / 4 + (1.0 - mask[:, None, :].float()) * -10000.0
        return self.ff(self.ln(x + self.o(scores.softmax(-1) @ self.v(x))))


def _batch(seed, length=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (4, length), generator=g)
    for row, real in enumerate((12, 9, 5, 3)):
        ids[row, real:] = 0
    return ids, (ids != 0).long(), torch.zeros_like(ids)


def _real_token_sqnr(model, quantized):
    ids, mask, types = _batch(100)
    with torch.no_grad():
        keep = mask.bool()
        return sqnr(model(ids, mask, types)[keep], quantized(ids, mask, types)[keep])


def test_observers_record_real_tokens_only_and_quantize_them_better():
    model = TinyEncoder().eval()
    calibration = [_batch(seed) for seed in range(4)]
    masked = fxq.quantize(model, calibration[0], calibration, backend="x86")
    assert masked.meta["fxq_recipe"]["name"] == "transformer"
    unmasked = fxq.quantize(model, calibration[0], calibration, backend="x86",
                            recipe=Recipe("no-mask", float_concepts=TRANSFORMER.float_concepts))
    gain = _real_token_sqnr(model, masked) - _real_token_sqnr(model, unmasked)
    assert gain > 6, f"{gain:.1f} dB"


def test_the_mask_is_the_input_that_builds_the_attention_mask():
    model = TinyEncoder().eval()
    calibration = [_batch(seed) for seed in range(2)]
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), calibration[0], backend="x86")
    (valid,) = [n for n in prepared.graph.nodes if n.target is torch.ne]
    assert valid.args[0].name == "mask"  # not ``types``, also 0/1 and 2-d
    readers = [n for n in valid.users if n.op == "call_module"]
    assert readers and all(len(info(n).history) and n.args[1] is valid for n in readers)


def test_without_a_mask_input_nothing_changes():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).eval()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 5, 8),), backend="x86",
                           recipe=Recipe("mask", prepare_passes=("mask-padding",)))
    assert not any(n.target is torch.ne for n in prepared.graph.nodes)
    assert all(len(n.args) == 1 for n in prepared.graph.nodes if n.op == "call_module" and "obs" in n.target)
