import torch
from torch import nn

from fxq.annotation import info
from fxq.graph_pass import PassContext
from fxq.observers import MinMaxObserver, PerChannelMinMaxObserver
from fxq.qconfig import QConfig
from fxq.qconfig_mapping import QConfigMapping
from tests.passes.helpers import run, traced

QC = QConfig(activation=MinMaxObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())


def _lowered(model, x):
    mapping = QConfigMapping().set_global(QC)
    ctx = PassContext(qconfig_mapping=mapping, example_inputs=(x,), original=model)
    gm = run(traced(model.eval()), "normalize", "fuse", "assign-qconfig", "insert-observers", ctx=ctx)
    gm(x)
    return run(gm, "lower")


def _targets(gm):
    return [n.target if n.op != "call_module" else n.target for n in gm.graph.nodes
            if n.op not in ("placeholder", "output")]


def test_dropout_and_identity_removed_and_requantization_collapses():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Identity(), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    lowered = _lowered(model, x)
    expected = lowered(x)
    before = _targets(lowered)
    assert "1" in before and "2" in before  # dropout and identity, each between q/dq pairs
    cleaned = run(lowered, "cleanup")
    after = _targets(cleaned)
    assert after == [torch.quantize_per_tensor, "dequantize", "0",
                     torch.quantize_per_tensor, "dequantize", "3"]  # "3" returns float: nothing int8 reads it
    assert torch.equal(cleaned(x), expected)
    assert not hasattr(cleaned, "1") and not hasattr(cleaned, "2")


def test_training_mode_dropout_and_different_qparams_are_kept():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            return torch.nn.functional.dropout(y, 0.5), y + 1  # F.dropout defaults to training=True

    x = torch.randn(3, 4)
    lowered = _lowered(M(), x)
    cleaned = run(lowered, "cleanup")
    assert any(n.target is torch.nn.functional.dropout for n in cleaned.graph.nodes)
    quantizes = [n for n in cleaned.graph.nodes if n.target is torch.quantize_per_tensor]
    assert len(quantizes) == len([n for n in lowered.graph.nodes if n.target is torch.quantize_per_tensor])
    assert all(info(n).lowered_to == "quantize" for n in quantizes)
