import pickle

import torch
from torch import nn

import fxq
from fxq.qat.recent_batches import RecentBatches


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)

    def forward(self, x, y):
        return self.fc(x) + y


def _sample(prepared) -> RecentBatches:
    [recorder] = [m for m in prepared.modules() if isinstance(m, RecentBatches)]
    return recorder


def _prepared(model=None, batches=None):
    model = model or TwoInputs().eval()
    batches = batches or [(torch.randn(4, 8), torch.randn(4, 8)) for _ in range(3)]
    return fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), batches[0], backend="x86"), batches


def test_the_last_calibration_batch_is_kept_after_every_input_is_defined():
    prepared, batches = _prepared()  # obs_x sits between the two placeholders; the recorder reads both
    prepared.graph.lint()
    for batch in batches:
        prepared(*batch)
    sample = _sample(prepared)
    assert sample.mode == "eval" and len(sample.batches) == 1
    kept = sample.batches[0]
    assert all(torch.equal(a, b) for a, b in zip(kept, batches[-1], strict=True))
    assert kept[0] is not batches[-1][0]  # a copy: the caller may reuse its tensor


def test_a_batch_over_the_budget_is_not_kept():
    prepared = fxq.prepare(TwoInputs().eval(), fxq.get_default_qconfig_mapping("x86"),
                           (torch.randn(4, 8), torch.randn(4, 8)), backend="x86",
                           passes={"prepare": "normalize,fuse,name-nodes,assign-qconfig,assign-precision,"
                                              "insert-observers,record-calibration-sample{budget_bytes=100}"})
    prepared(torch.randn(4, 8), torch.randn(4, 8))
    assert _sample(prepared).batches == [] and _sample(prepared).too_large


def test_the_kept_batches_do_not_travel_in_pickles_or_files(tmp_path):
    prepared, batches = _prepared()
    for batch in batches:
        prepared(*batch)
    assert _sample(pickle.loads(pickle.dumps(prepared))).batches == []
    fxq.save(prepared, tmp_path / "prepared.fxq")
    assert _sample(fxq.load(tmp_path / "prepared.fxq")).batches == []


def test_quantization_aware_training_has_no_calibration_sample():
    model = TwoInputs()
    prepared = fxq.prepare_qat(model, None, (torch.randn(4, 8), torch.randn(4, 8)), backend="x86")
    assert all(m.mode == "training" for m in prepared.modules() if isinstance(m, RecentBatches))


def test_the_converted_model_keeps_no_recorder():
    prepared, batches = _prepared()
    for batch in batches:
        prepared(*batch)
    converted = fxq.convert(prepared, passes={"convert": "lower,cleanup,name-nodes"})  # even without its reader
    assert not any(isinstance(m, RecentBatches) for m in converted.modules())
