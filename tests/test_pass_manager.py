from dataclasses import dataclass

import pytest
import torch
from torch import nn

import fxq
from fxq.errors import ConfigError, PassError, PassOrderError
from fxq.graph_pass import GraphPass, PassContext, add_properties, properties_of
from fxq.pass_manager import PassManager, parse_pipeline
from fxq.pass_registry import get_pass, register_pass
from tests.passes.helpers import traced


@register_pass
@dataclass(frozen=True)
class CountNodes(GraphPass):
    name = "test-count-nodes"
    requires = frozenset({"normalized"})
    provides = frozenset({"counted"})
    label: str = "x"

    def run(self, gm, ctx):
        ctx.notes.append(f"{self.label}:{len(gm.graph.nodes)}")
        return gm


@register_pass
@dataclass(frozen=True)
class Explode(GraphPass):
    name = "test-explode"
    requires = frozenset({"normalized"})

    def run(self, gm, ctx):
        node = next(n for n in gm.graph.nodes if n.op == "call_module")
        err = RuntimeError("boom")
        err.fxq_node = node
        raise err


@register_pass
@dataclass(frozen=True)
class BreakNumerics(GraphPass):
    name = "test-break-numerics"
    requires = frozenset({"normalized"})
    preserves_numerics = True

    def run(self, gm, ctx):
        for node in gm.graph.nodes:
            if node.op == "output":
                with gm.graph.inserting_before(node):
                    doubled = gm.graph.call_function(torch.mul, (node.args[0], 2.0))
                node.args = (doubled,)
        return gm


def _model():
    return nn.Sequential(nn.Linear(3, 3), nn.ReLU()).eval()


def test_order_is_checked_before_anything_runs():
    gm = traced(_model())
    ctx = PassContext()
    with pytest.raises(PassOrderError, match=r"'test-count-nodes' \(from tests.test_pass_manager.CountNodes\) requires \['normalized'\].*'normalize'"):
        PassManager([CountNodes(), get_pass("normalize")()]).run(gm, ctx)
    assert ctx.notes == []  # nothing ran


def test_runs_in_order_times_each_pass_and_keeps_snapshots():
    gm = traced(_model())
    ctx = PassContext()
    result = PassManager("normalize,test-count-nodes{label='n'}", keep_snapshots=True).run(gm, ctx)
    assert [r.name for r in result.records] == ["normalize", "test-count-nodes"]
    assert all(r.seconds >= 0 for r in result.records)
    assert all(r.snapshot is not None and r.snapshot is not result.graph_module for r in result.records)
    assert ctx.notes == ["n:4"]
    assert {"traced", "normalized", "counted"} <= properties_of(result.graph_module)


def test_spec_string_errors():
    with pytest.raises(ConfigError, match="no pass named 'nope'"):
        parse_pipeline("normalize,nope")
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_pipeline("normalize,,{")


def test_failure_names_pass_node_and_earlier_passes():
    gm = traced(_model())
    with pytest.raises(PassError) as caught:
        PassManager("normalize,test-explode").run(gm, PassContext())
    message = str(caught.value)
    assert "'test-explode'" in message and "%_0 : [num_users=1] = call_module[target=0]" in message
    assert "normalize" in message and "boom" in message
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_numeric_verification_catches_a_pass_that_changes_outputs():
    gm = traced(_model())
    ctx = PassContext(example_inputs=(torch.randn(2, 3),))
    with pytest.raises(PassError, match="test-break-numerics"):
        PassManager("normalize,test-break-numerics", verify_numerics=True).run(gm, ctx)
    gm = traced(_model())
    PassManager("normalize,test-break-numerics").run(gm, ctx)  # not verified: no error


def test_registry_rejects_name_clash_and_lists_passes():
    @dataclass(frozen=True)
    class Other(GraphPass):
        name = "normalize"

    get_pass("normalize")
    with pytest.raises(ConfigError, match="already taken"):
        register_pass(Other)
    assert {"normalize", "fuse", "assign-qconfig", "insert-observers", "lower", "cleanup"} <= set(
        fxq.available_passes())


def test_properties_recorded_on_graph_module():
    gm = traced(_model())
    add_properties(gm, frozenset({"x"}))
    assert properties_of(gm) == frozenset({"traced", "x"})
