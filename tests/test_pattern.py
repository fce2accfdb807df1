import operator
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxq.errors import ConfigError
from fxq.pattern import ANY, Pattern, find_matches, match, op_matches
from tests.passes.helpers import traced


class ReluForms(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        a = self.relu(self.lin(x))
        b = F.relu(F.linear(x, self.lin.weight))
        c = torch.relu(a)
        return x.relu() + a + b + c


def _nodes(gm):
    return {n.name: n for n in gm.graph.nodes}


def test_every_form_of_a_concept_matches_a_pattern_written_any_way():
    gm = traced(ReluForms())
    modules = dict(gm.named_modules())
    relu_nodes = [n for n in gm.graph.nodes if n.name in ("relu", "relu_1", "relu_2", "relu_3")]
    assert len(relu_nodes) == 4
    for spelling in (nn.ReLU, F.relu, torch.relu, "relu"):
        pattern = Pattern(spelling)
        assert all(op_matches(pattern, n, modules) for n in relu_nodes), spelling
    add = next(n for n in gm.graph.nodes if n.target is operator.add)
    assert not op_matches(Pattern(nn.ReLU), add, modules)


def test_chain_captures_and_first_to_last_order():
    gm = traced(ReluForms())
    modules = dict(gm.named_modules())
    pattern = Pattern.chain(nn.Linear, nn.ReLU, names=("lin", "act"))
    found = [m for _, m in find_matches(gm.graph, pattern, modules) if m]
    assert len(found) == 2  # module linear + module relu, functional linear + F.relu
    names = sorted((m.captures["lin"].name, m.captures["act"].name) for m in found)
    assert names == [("lin", "relu"), ("linear", "relu_1")]


def test_torch_ao_tuple_forms_are_accepted():
    flat = Pattern.of((nn.Linear, nn.ReLU))
    nested = Pattern.of((nn.ReLU, nn.Linear))
    assert flat.describe() == "linear -> relu"
    assert Pattern.of((nn.ReLU, (nn.BatchNorm2d, nn.Conv2d))).describe() == "conv2d -> batch_norm -> relu"
    assert nested.describe() == "relu -> linear"


def test_inner_node_with_two_users_is_a_near_miss_with_reason():
    gm = traced(ReluForms())
    modules = dict(gm.named_modules())
    pattern = Pattern.chain("relu", "relu")  # relu(relu(...)): inner relu `relu` has 2 users
    results = dict(find_matches(gm.graph, pattern, modules))
    outer = _nodes(gm)["relu_2"]
    assert not results[outer]
    assert results[outer].near
    assert "has 2 users" in results[outer].reason
    allowed = Pattern("relu", (Pattern("relu", (ANY,), multi_user=True),))
    assert match(allowed, outer, modules)


def test_a_node_belongs_to_one_match_only():
    model = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU())
    gm = traced(model)
    found = [m for _, m in find_matches(gm.graph, Pattern.chain("relu", "relu"), dict(gm.named_modules())) if m]
    assert len(found) == 1


def test_unknown_string_op_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="relux"):
        Pattern("relux")


def test_pattern_remembers_where_it_was_written():
    pattern = Pattern.chain(nn.Linear, nn.ReLU)
    assert pattern.where.startswith("test_pattern.py:")


def test_matching_cost_grows_linearly():
    def chain_model(n):
        return nn.Sequential(*[m for _ in range(n) for m in (nn.Linear(2, 2), nn.ReLU())])

    pattern = Pattern.chain(nn.Linear, nn.ReLU)

    def cost(n):
        gm = traced(chain_model(n))
        modules = dict(gm.named_modules())
        start = time.perf_counter()
        count = sum(1 for _, m in find_matches(gm.graph, pattern, modules) if m)
        assert count == n
        return time.perf_counter() - start

    cost(50)
    small, large = min(cost(250) for _ in range(3)), min(cost(1000) for _ in range(3))
    assert large < small * 4 * 2.5  # 4x the nodes: linear, with generous slack for a noisy machine
