import operator

import torch
import torch.nn.functional as F
from torch import nn

from fxq.annotation import info
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
