"""fake-quantize alone: on an observed graph, every observer becomes a FakeQuantize under its own name (so the
node records still name it) and every layer whose weight lower will quantize rounds it in its forward; layers
left float, and dynamic ones, keep their plain forms."""

import torch
from torch import nn

import fxq
from fxq.annotation import info
from fxq.graph_pass import PassContext
from fxq.observers import Observer
from fxq.qat import FakeQuantize
from fxq.qat.batch_norm import FreezableBatchNorm
from fxq.qat.modules import QATConv2d, QATLinear
from tests.passes.helpers import run


class ConvHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.kept = nn.Conv2d(3, 4, 3), nn.Linear(36, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.kept(self.fc(torch.relu(self.conv(x)).flatten(1)))


def _observed(mapping):
    return fxq.prepare(ConvHead().eval(), mapping, (torch.randn(2, 3, 5, 5),), backend="x86")


def test_observers_become_fake_quantizers_and_quantized_layers_train_through_rounding():
    mapping = fxq.get_default_qat_qconfig_mapping("x86").set_module_name("kept", None)
    gm = _observed(mapping)
    observers = {name for name, m in gm.named_modules() if isinstance(m, Observer)}
    gm = run(gm, "fake-quantize", ctx=PassContext(backend="x86"))
    modules = dict(gm.named_modules())
    assert {name for name, m in modules.items() if isinstance(m, FakeQuantize)} == observers
    for node in gm.graph.nodes:
        for role, name in info(node).observers.items():
            assert isinstance(modules[name], FakeQuantize), (node.name, role)
    assert isinstance(modules["conv.0"] if "conv.0" in modules else modules["conv"], QATConv2d)
    assert isinstance(modules["fc"], QATLinear)
    assert type(modules["kept"]) is nn.Linear  # float by the mapping: nothing to round


def test_dynamic_layers_keep_their_plain_form():
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name(
        "fc", fxq.get_default_dynamic_qconfig(torch.qint8, "x86"))
    gm = run(_observed(mapping), "fake-quantize", ctx=PassContext(backend="x86"))
    assert type(dict(gm.named_modules())["fc"]) is nn.Linear


def test_every_batch_norm_becomes_freezable_lone_ones_and_those_kept_with_a_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4))
    gm = fxq.prepare(model.eval(), fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(2, 3, 8, 8),),
                     backend="x86")
    gm = run(gm, "fake-quantize", ctx=PassContext(backend="x86"))
    norms = [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, FreezableBatchNorm) and not bool(m.stats_frozen) for m in norms)
