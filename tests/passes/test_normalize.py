import copy
import operator

import torch
import torch.nn.functional as F
from torch import nn

from fxq.annotation import info
from fxq.graph_pass import PassContext, add_properties
from fxq.tracing import trace
from tests.passes.helpers import op_nodes, run, traced


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x, y):
        a = x * 2
        a.relu_()            # method in-place
        b = F.relu(y, inplace=True)
        a += b               # operator.iadd
        c = self.act(a - 1)  # module with inplace=True
        return c + a         # `a` after the iadd must be the iadd's result


def test_inplace_forms_become_out_of_place_and_numerics_hold():
    model = InPlace().eval()
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    expected = model(x.clone(), y.clone())
    gm = run(traced(model), "normalize")
    assert op_nodes(gm) == [
        ("call_function", "mul", operator.mul),
        ("call_method", "relu", "relu"),
        ("call_function", "relu", F.relu),
        ("call_function", "add", operator.add),
        ("call_function", None, operator.sub),
        ("call_module", "relu", nn.ReLU),
        ("call_function", "add", operator.add),
    ]
    relu_function = next(n for n in gm.graph.nodes if n.target is F.relu)
    assert relu_function.kwargs.get("inplace") is False
    assert gm.get_submodule("act").inplace is False
    assert torch.equal(gm(x.clone(), y.clone()), expected)


def test_users_after_an_inplace_op_read_its_result():
    gm = run(traced(InPlace()), "normalize")
    add_nodes = [n for n in gm.graph.nodes if n.target is operator.add]
    iadd, final = add_nodes
    assert iadd in final.args  # `c + a` reads the (former) iadd, not `a` before it
    sub = next(n for n in gm.graph.nodes if n.target is operator.sub)
    assert sub.args[0] is iadd


def test_concepts_recorded_for_every_form_of_relu():
    class Forms(nn.Module):
        def __init__(self):
            super().__init__()
            self.r = nn.ReLU()

        def forward(self, x):
            return self.r(x) + F.relu(x) + torch.relu(x) + x.relu()

    gm = run(traced(Forms()), "normalize")
    relus = [info(n).concept for n in gm.graph.nodes if n.op != "placeholder" and n.op != "output"
             and n.target is not operator.add]
    assert relus == ["relu", "relu", "relu", "relu"]


def test_nothing_to_do_leaves_the_graph_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    gm = traced(model)
    before = [(n.op, n.target) for n in gm.graph.nodes]
    gm = run(gm, "normalize")
    assert [(n.op, n.target) for n in gm.graph.nodes] == before
    assert all(not info(n).history for n in gm.graph.nodes)


class Shared(nn.Module):
    """One Linear and one ReLU module, each called twice; a custom (unknown) module called twice too."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(6, 6))
        self.act = nn.ReLU()
        self.custom = Scale()

    def forward(self, x):
        x = self.act(self.block[0](x))
        x = self.act(self.block[0](x))
        return self.custom(self.custom(x))


class Scale(nn.Module):
    def forward(self, x):
        return x * 0.5


def test_each_call_of_a_known_module_gets_its_own_module_sharing_its_parameters():
    model = Shared().eval()
    x = torch.randn(3, 6)
    gm = trace(copy.deepcopy(model), leaf_modules=["custom"]).graph_module
    add_properties(gm, frozenset({"traced"}))
    gm = run(gm, "normalize")
    calls = [(n.target, info(n).module_path) for n in gm.graph.nodes if n.op == "call_module"]
    assert calls == [("block.0", "block.0"), ("act", "act"), ("block.0_call2", "block.0"), ("act_call2", "act"),
                     ("custom", "custom"), ("custom", "custom")]  # fxq never rewrites an unknown module
    first, second = gm.get_submodule("block.0"), gm.get_submodule("block.0_call2")
    assert first is not second
    assert first.weight is second.weight and first.bias is second.bias  # tied, not duplicated
    assert first._parameters is not second._parameters  # a pass may replace one call's weight alone
    assert torch.equal(gm(x), model(x))
    second_call = next(n for n in gm.graph.nodes if n.target == "block.0_call2")
    assert [stamp.rule for stamp in info(second_call).history] == ["own_module_per_call"]


def test_a_rule_naming_a_shared_module_reaches_every_call():
    from fxq.qconfig_mapping import get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping("reference").set_module_name("block.0", None)
    gm = run(traced(Shared().eval()), "normalize", "assign-qconfig",
             ctx=PassContext(qconfig_mapping=mapping, original=Shared()))
    linears = [n for n in gm.graph.nodes if info(n).concept == "linear"]
    assert len(linears) == 2
    assert all(info(n).qconfig is None and info(n).qconfig_rule == "module_name('block.0')" for n in linears)
