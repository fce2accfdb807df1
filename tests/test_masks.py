"""Values that must not be quantized: additive attention masks built from huge constants, integer ids and
boolean masks. torch.ao observes the integer mask and quantizes the finfo.min add, which wrecks padded inputs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.annotation import info
from tests.models import sqnr

FINFO_MIN = torch.finfo(torch.float32).min


class MaskedAttention(nn.Module):
    """Token ids and a 0/1 padding mask in; the mask becomes an additive (1 - mask) * finfo.min on the scores."""

    def __init__(self, vocab=100, dim=32, sdpa=False, fill=FINFO_MIN):
        super().__init__()
        self.embed, self.sdpa, self.fill = nn.Embedding(vocab, dim), sdpa, fill
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, ids, mask):
        x = self.embed(ids)
        additive = (1.0 - mask[:, None, :].float()) * self.fill
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        else:
            scores = q @ k.transpose(1, 2) / 32 ** 0.5 + additive
            attended = torch.softmax(scores, dim=-1) @ v
        return self.out(attended)


def _batch(padded, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (4, 12), generator=g)
    mask = torch.ones(4, 12, dtype=torch.long)
    if padded:
        mask[:, 8:] = 0
    return ids, mask


@pytest.mark.parametrize("fill", [FINFO_MIN, -10000.0])  # -10000: the classic BERT mask
@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("sdpa", [False, True])
def test_additive_mask_stays_float_even_when_the_example_has_no_padding(capture, sdpa, fill):
    torch.manual_seed(0)
    model = MaskedAttention(sdpa=sdpa, fill=fill).eval()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), _batch(padded=False), backend="x86",
                           capture=capture)
    for seed in range(4):  # calibration does see padding
        prepared(*_batch(padded=True, seed=seed))
    quantized = fxq.convert(prepared)
    floats = {n.name: info(n).float_reason for n in quantized.graph.nodes if info(n).float_reason}
    assert any("additive mask" in why for why in floats.values()), floats
    ids, mask = _batch(padded=True, seed=9)
    with torch.no_grad():
        assert sqnr(model(ids, mask), quantized(ids, mask)) > 25
    kinds = {info(n).lowered_to for n in quantized.graph.nodes}
    assert {"QuantizedLinear", "QuantizedLinearFloatOutput"} & set(kinds)  # the projections after the mask: int8


def test_integer_ids_and_masks_are_never_observed():
    model = MaskedAttention().eval()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), _batch(padded=True), backend="x86",
                           capture="export")
    watched = {row.node for row in fxq.observer_summary(prepared)}
    placeholders = {n.name for n in prepared.graph.nodes if n.op == "placeholder"}
    assert not watched & placeholders


def test_an_observer_refuses_a_mask_with_a_clear_error():
    from fxq.observers import HistogramObserver

    observer = HistogramObserver()
    observer.node_name = "scores_plus_mask"
    with pytest.raises(fxq.CalibrationError, match="scores_plus_mask.*additive mask"):
        observer(torch.tensor([0.5, torch.finfo(torch.float32).min]))


def test_integer_arguments_are_sizes_not_mask_constants():
    class Pooler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(8, 8)

        def forward(self, x):  # x[:, 0] exports as slice(x, 0, 0, 2**63 - 1) then select
            return torch.tanh(self.dense(x[:, 0].reshape(-1, 10000 // 1250)))

    model = Pooler().eval()
    x = torch.randn(2, 4, 8)
    for capture in ("fx", "export"):
        prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), (x,), backend="x86", capture=capture)
        (dense,) = [n for n in prepared.graph.nodes if fxq.info(n).concept == "linear"]
        assert fxq.info(dense).qconfig is not None and fxq.info(dense).observers, fxq.info(dense).float_reason
