import operator

import pytest
import torch
from torch import nn

from fxq.annotation import info
from fxq.errors import ConfigError
from fxq.graph_pass import PassContext
from fxq.observers import MinMaxObserver, PerChannelMinMaxObserver
from fxq.qconfig import QConfig
from fxq.qconfig_mapping import QConfigMapping
from tests.passes.helpers import run, traced

QC_A = QConfig(activation=MinMaxObserver.with_args(), weight=PerChannelMinMaxObserver.with_args())
QC_B = QConfig(activation=MinMaxObserver.with_args(reduce_range=True), weight=PerChannelMinMaxObserver.with_args())


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.conv = nn.Conv2d(1, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.fc(x)
        return self.relu(y) + y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)) * 2)


def _assigned(mapping, model=None):
    model = model or Net().eval()
    gm = run(traced(model), "normalize", "fuse",
             ctx=PassContext(qconfig_mapping=mapping, original=model))
    gm = run(gm, "assign-qconfig", ctx=PassContext(qconfig_mapping=mapping, original=model))
    return {n.name: info(n) for n in gm.graph.nodes}


def test_rules_recorded_per_node():
    mapping = (QConfigMapping().set_global(QC_A).set_object_type(nn.Linear, QC_B)
               .set_module_name("head", None).set_object_type(operator.mul, None))
    records = _assigned(mapping)
    assert records["stem"].qconfig == QC_B and records["stem"].qconfig_rule == "object_type(Linear)"
    assert records["head"].qconfig is None and records["head"].qconfig_rule == "module_name('head')"
    assert "qconfig is None" in records["head"].float_reason
    assert records["mul"].qconfig is None
    assert records["add"].qconfig == QC_A and records["add"].qconfig_rule == "global"


def test_function_inside_a_named_module_takes_the_module_rule():
    mapping = QConfigMapping().set_global(QC_A).set_module_name("block", QC_B)
    records = _assigned(mapping)
    assert records["add"].qconfig == QC_B  # `+` in Block.forward is inside module "block"
    assert records["block_fc"].qconfig == QC_B  # ancestor prefix
    assert records["stem"].qconfig == QC_A


def test_order_rule_counts_calls_per_parent_and_type():
    mapping = QConfigMapping().set_global(QC_A).set_module_name_object_type_order("", nn.Linear, 1, QC_B)
    records = _assigned(mapping)
    assert records["stem"].qconfig == QC_A  # first Linear called in the root
    assert records["head"].qconfig == QC_B  # second Linear called in the root
    assert records["block_fc"].qconfig == QC_A  # in "block", not the root


def test_fused_module_matched_by_its_first_members_type():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    mapping = QConfigMapping().set_global(QC_A).set_object_type(nn.Linear, QC_B)
    records = _assigned(mapping, model)
    assert records["_0"].concept == "linear_relu"
    assert records["_0"].qconfig == QC_B


def test_rule_naming_a_missing_module_is_an_error_naming_it():
    mapping = QConfigMapping().set_global(QC_A).set_module_name("blok.fc", None)
    with pytest.raises(ConfigError, match=r"blok\.fc.*block\.fc"):
        _assigned(mapping)


def test_missing_mapping_is_an_error():
    gm = run(traced(Net()), "normalize")
    with pytest.raises(ConfigError, match="QConfigMapping"):
        run(gm, "assign-qconfig", ctx=PassContext())


def test_names_that_only_existed_before_fusion_are_valid():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).eval()
    mapping = QConfigMapping().set_global(QC_A).set_module_name("1", None)  # the folded batch norm
    records = _assigned(mapping, model)
    assert records["_0"].qconfig == QC_A
    x = torch.randn(1, 1, 3, 3)
    assert model(x).shape == (1, 2, 3, 3)
