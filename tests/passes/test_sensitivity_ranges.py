import copy

import pytest
import torch
import torch.nn.functional as F
from fxq.passes.sensitivity_ranges import META_KEY
from torch import nn

import fxq
from fxq.annotation import info
from fxq.metrics import sqnr_db
from fxq.observers.covering import CoveringObserver
from tests.models import SquaredTail

WITHOUT = {"convert": "lower,cleanup,name-nodes"}  # the default convert pipeline (no recipe) less the pass


class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x))).mean((2, 3))


def _batches():
    g = torch.Generator().manual_seed(3974915547458779828)
    return [torch.randn((4, 16, 12, 12), generator=g) for _ in range(10)]


def _quantize(model, backend, passes=None):
    batches = _batches()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(backend), (batches[0],), backend=backend,
                           recipe="none")
    with torch.no_grad():
        for batch in batches[1:9]:
            prepared(batch)
    return prepared, fxq.convert(prepared, passes=passes, runtime="graph"), batches[-1]


@pytest.mark.parametrize("backend", ["reference", "x86", "qnnpack"])
def test_a_clipped_tail_that_is_squared_downstream_gets_its_range_back(backend):
    model = SquaredTail().eval()
    _, widened, x = _quantize(model, backend)
    _, plain, _ = _quantize(model, backend, WITHOUT)
    with torch.no_grad():
        expected = model(x)
        gained, before = sqnr_db(expected, widened(x)), sqnr_db(expected, plain(x))
    assert before < 15 and gained >= 20 and gained - before >= 6, (before, gained)  # measured: 13.9 -> 22.2 dB
    assert widened.meta[META_KEY].endswith("histogram activation ranges widened")


def test_a_model_that_does_not_amplify_its_tails_is_left_alone():
    model = PlainCNN().eval()
    _, converted, x = _quantize(model, "x86")
    _, plain, _ = _quantize(model, "x86", WITHOUT)
    assert converted.meta[META_KEY].startswith("0 of ")
    assert torch.equal(converted(x), plain(x))


def test_the_widened_value_says_why_and_the_prepared_model_keeps_its_observers():
    prepared, converted, _ = _quantize(SquaredTail().eval(), "x86")
    before = {name: copy.deepcopy(m.observed_range()) for name, m in prepared.named_modules()
              if hasattr(m, "histogram")}
    stamped = [node for node in converted.graph.nodes
               if any(s.pass_name == "sensitivity-ranges" for s in info(node).history)]
    assert stamped and all("widened to" in next(s.rule for s in info(node).history
                                                 if s.pass_name == "sensitivity-ranges") for node in stamped)
    reasons = [q.get("why_range") for node in converted.graph.nodes for q in info(node).qparams.values()]
    assert any(reason and "at the output, the clip cost" in reason for reason in reasons)
    assert not any(isinstance(m, CoveringObserver) for m in prepared.modules())
    after = {name: m.observed_range() for name, m in prepared.named_modules() if hasattr(m, "histogram")}
    assert all(torch.equal(before[n][0], after[n][0]) and torch.equal(before[n][1], after[n][1]) for n in before)
    again = fxq.convert(prepared, runtime="graph")  # the same batches replayed with the same probes
    x = _batches()[-1]
    assert torch.equal(again(x), converted(x))


def test_without_kept_batches_the_observers_ranges_stand_and_the_model_says_why(tmp_path):
    prepared, converted, x = _quantize(SquaredTail().eval(), "x86")
    fxq.save(prepared, tmp_path / "prepared.fxq")
    loaded = fxq.convert(fxq.load(tmp_path / "prepared.fxq"), runtime="graph")
    plain = fxq.convert(prepared, passes=WITHOUT, runtime="graph")
    assert "no calibration batches were kept" in loaded.meta[META_KEY]
    assert torch.equal(loaded(x), plain(x))


class NoGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("no gradient here")


class Opaque(nn.Module):
    _fxq_leaf = True

    def forward(self, x):
        return NoGradient.apply(x)


class WithOpaque(SquaredTail):
    def __init__(self):
        super().__init__()
        self.opaque = Opaque()

    def forward(self, x):
        return self.opaque(super().forward(x))


def test_a_model_that_cannot_be_differentiated_converts_with_the_observers_ranges():
    model = WithOpaque().eval()
    _, converted, x = _quantize(model, "x86")
    _, plain, _ = _quantize(model, "x86", WITHOUT)
    assert "could not be differentiated" in converted.meta[META_KEY]
    assert torch.equal(converted(x), plain(x))
