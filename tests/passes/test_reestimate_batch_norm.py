"""reestimate-batch-norm alone: on a trained QAT graph it measures the batch norms again on the recorded batches
and removes the recorder; with nothing pending (measured already, or never trained) it only removes it."""

import torch
from torch import nn

import fxq
from fxq.graph_pass import PassContext
from fxq.qat.recent_batches import RecentBatches
from tests.passes.helpers import run


def _prepared():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    return fxq.prepare_qat(model, None, (torch.randn(2, 3, 8, 8),))


def _norm(gm):
    return next(m for m in gm.modules() if isinstance(m, nn.BatchNorm2d))


def test_trained_graphs_are_measured_again_and_lose_the_recorder():
    gm = _prepared()
    gm(torch.randn(8, 3, 8, 8) * 3 + 2)
    trained = _norm(gm).running_mean.clone()
    gm = run(gm, "reestimate-batch-norm", ctx=PassContext(backend="x86"))
    assert not any(isinstance(m, RecentBatches) for m in gm.modules())
    assert not any(n.op == "call_module" and n.target == "recent_batches" for n in gm.graph.nodes)
    assert "on the 1 last training batch(es) (8 samples)" in gm.meta["fxq_batch_norm"]
    assert not torch.allclose(_norm(gm).running_mean, trained)


def test_an_untrained_graph_only_loses_the_recorder():
    gm = _prepared()
    before = _norm(gm).running_mean.clone()
    gm = run(gm, "reestimate-batch-norm", ctx=PassContext(backend="x86"))
    assert "fxq_batch_norm" not in gm.meta
    assert not any(isinstance(m, RecentBatches) for m in gm.modules())
    assert torch.equal(_norm(gm).running_mean, before)
