"""Batch-norm statistics measured again after QAT: convert does it by itself on the last training batches
(leaving the prepared model as it was), reestimate_bn_stats does the same to the prepared model, frozen norms
are left alone, and a model that lost its batches (pickled) converts with a warning instead of silently."""

import pickle

import pytest
import torch
from torch import nn

import fxq
from fxq.metrics import sqnr_db
from fxq.qat import freeze_bn_stats, reestimate_bn_stats
from fxq.qat.recent_batches import RecentBatches


def _trained(steps=6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()  # untrained: running stats 0 and 1
    prepared = fxq.prepare_qat(model, None, (torch.randn(4, 3, 10, 10),))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        prepared(torch.randn(16, 3, 10, 10) * 2 + 1).square().mean().backward()
        optimizer.step()
    return prepared


def _stats(model):
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_convert_measures_again_what_reestimate_bn_stats_measures_and_leaves_the_prepared_model_alone():
    prepared = _trained()
    before = _stats(prepared)
    converted = fxq.convert(prepared.eval())
    assert all(torch.equal(a, b) for a, b in zip(before, _stats(prepared), strict=True))
    assert "measured again" in converted.meta["fxq_batch_norm"]
    x = torch.randn(8, 3, 10, 10) * 2 + 1
    with torch.no_grad():
        stale = sqnr_db(prepared(x), converted(x))
        reestimate_bn_stats(prepared)
        assert not all(torch.equal(a, b) for a, b in zip(before, _stats(prepared), strict=True))
        assert not prepared.training  # modes restored
        assert sqnr_db(prepared(x), converted(x)) >= 35 > stale


def test_the_statistics_are_those_of_the_last_batches_with_the_final_weights():
    prepared = _trained()
    recorded = prepared.get_submodule("recent_batches").batches
    assert len(recorded) == 4
    norm = next(m for m in prepared.modules() if isinstance(m, nn.BatchNorm2d))
    trained = norm.running_mean.clone()
    reestimate_bn_stats(prepared)
    unit = prepared.get_submodule("0")
    prepared.eval()
    with torch.no_grad():  # the first unit's pre-norm output on the recorded inputs, by hand
        rounded = unit.weight_fake_quant(unit.layer.weight * unit._fold_factor().reshape(-1, 1, 1, 1))
        inputs = torch.cat([prepared.get_submodule(prepared.graph.find_nodes(op="call_module", target="0")[0]
                                                   .args[0].target)(b[0]) for b in recorded])
        y = nn.functional.conv2d(inputs, rounded) / unit._fold_factor().reshape(1, -1, 1, 1) \
            + unit.layer.bias.reshape(1, -1, 1, 1)
    # close, not equal: while the statistics are measured, the folded weight rounds with the ones measured so far
    assert torch.allclose(norm.running_mean, y.mean((0, 2, 3)), atol=5e-3)
    assert not torch.allclose(trained, y.mean((0, 2, 3)), atol=5e-2)


def test_frozen_norms_keep_their_statistics():
    prepared = _trained()
    freeze_bn_stats(prepared)
    before = _stats(prepared)
    assert "none, or all frozen" in reestimate_bn_stats(prepared)
    assert all(torch.equal(a, b) for a, b in zip(before, _stats(prepared), strict=True))


def test_a_saved_or_pickled_model_keeps_no_batches_convert_warns_and_reestimate_asks_for_batches(tmp_path):
    trained = _trained()
    assert pickle.loads(pickle.dumps(trained)).get_submodule("recent_batches").batches == []
    fxq.save(trained, tmp_path / "qat.pt")
    prepared = fxq.load(tmp_path / "qat.pt")
    assert prepared.get_submodule("recent_batches").batches == []
    with pytest.warns(fxq.FxqWarning, match="kept as training left them"):
        fxq.convert(prepared.eval())
    with pytest.raises(fxq.ConfigError, match="pass batches"):
        reestimate_bn_stats(prepared)
    assert "2 norm(s)" in reestimate_bn_stats(prepared, [torch.randn(8, 3, 10, 10)])


def test_the_recorder_keeps_the_last_batches_within_its_budget_and_only_in_training():
    recorder = RecentBatches(keep=2, budget_bytes=4 * 100)
    for value in range(3):
        recorder(torch.full((10,), float(value)), "mask")
    assert [float(b[0][0]) for b in recorder.batches] == [1.0, 2.0] and recorder.batches[0][1] == "mask"
    recorder(torch.zeros(200))  # 800 bytes: over budget, the record is cleared
    assert recorder.batches == [] and recorder.too_large
    recorder.eval()
    recorder(torch.zeros(10))
    assert recorder.batches == []
