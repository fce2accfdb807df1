import torch
import torch.nn.functional as F
from torch import nn

from fxq.annotation import info
from fxq.graph_pass import PassContext
from fxq.nn import fused
from tests.passes.helpers import close, op_nodes, run, traced


def _warm(model, shape):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape) * 2 + 0.5)
    return model.eval()


class ConvBnRelu(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim]
        self.conv = conv(3, 8, 3, bias=False)
        self.bn = bn(8)
        self.conv2 = conv(8, 4, 1)
        self.bn2 = bn(4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.bn2(self.conv2(x))


def test_conv_bn_relu_and_conv_bn_fold_in_every_dimension():
    for dim, shape, fused_type, conv_type in [(1, (2, 3, 10), fused.ConvReLU1d, nn.Conv1d),
                                              (2, (2, 3, 10, 10), fused.ConvReLU2d, nn.Conv2d),
                                              (3, (2, 3, 6, 6, 6), fused.ConvReLU3d, nn.Conv3d)]:
        model = _warm(ConvBnRelu(dim), shape)
        x = torch.randn(shape)
        gm = run(traced(model), "normalize", "fuse")
        assert op_nodes(gm) == [("call_module", f"conv{dim}d_relu", fused_type),
                                ("call_module", f"conv{dim}d", conv_type)]
        assert close(gm(x), model(x), 1e-4)
        first = next(n for n in gm.graph.nodes if n.op == "call_module")
        assert info(first).fused_from == ("conv", "bn", "relu")
        assert info(first).fused_group == "conv+bn+relu"
        assert info(first).history[-1].pass_name == "fuse"
        assert "fuse.py" in info(first).history[-1].where


def test_linear_bn1d_and_linear_relu():
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 4), nn.ReLU())
    model = _warm(model, (16, 6))
    x = torch.randn(4, 6)
    gm = run(traced(model), "normalize", "fuse", ctx=PassContext(example_inputs=(x,)))
    assert op_nodes(gm) == [("call_module", "linear", nn.Linear), ("call_module", "linear_relu", fused.LinearReLU)]
    assert close(gm(x), model(x), 1e-4)


def test_near_miss_linear_bn1d_on_a_sequence_is_not_folded():
    """On (N, L, F) a linear's features are the last dimension, while BatchNorm1d normalises dimension 1: folding
    it into the linear's weights gave a wrong answer (0.8 dB) when L happened to equal the feature count."""
    model = _warm(nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8)), (16, 8, 16))
    x = torch.randn(3, 8, 16)
    gm = run(traced(model), "normalize", "fuse", ctx=PassContext(example_inputs=(x,)))
    assert [row[1] for row in op_nodes(gm)] == ["linear", "batch_norm"]
    reasons = [reason for n in gm.graph.nodes for _, reason in info(n).declined]
    assert any("rank 3" in reason and "dimension 1" in reason for reason in reasons), reasons
    assert close(gm(x), model(x))


def test_bn_relu_without_conv_and_method_relu():
    class BnRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(x).relu()

    model = _warm(BnRelu(), (4, 3, 5, 5))
    gm = run(traced(model), "normalize", "fuse")
    assert op_nodes(gm) == [("call_module", "batch_norm_relu", fused.BNReLU2d)]
    x = torch.randn(2, 3, 5, 5)
    assert close(gm(x), model(x))


def test_near_miss_conv_output_used_twice_is_not_fused_and_says_why():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.relu(y) + y

    gm = run(traced(Shared().eval()), "normalize", "fuse")
    assert op_nodes(gm)[:2] == [("call_module", "conv2d", nn.Conv2d), ("call_module", "relu", nn.ReLU)]
    relu = next(n for n in gm.graph.nodes if n.target == "relu")
    reasons = [reason for _, reason in info(relu).declined]
    assert any("conv has 2 users" in reason for reason in reasons), reasons


def test_near_miss_functional_conv_and_shared_module():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 1, 1))
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = torch.relu(F.conv2d(x, self.w))
            x = torch.relu(self.conv(x))
            return torch.relu(self.conv(x))  # the same conv module called twice

    model = Functional().eval()
    x = torch.randn(2, 3, 5, 5)
    gm = run(traced(model), "normalize", "fuse")
    kinds = [row[:2] for row in op_nodes(gm)]
    # normalize gave the second call its own module, so each call fuses with its own ReLU
    assert kinds == [("call_function", "conv2d"), ("call_function", "relu"), ("call_module", "conv2d_relu"),
                     ("call_module", "conv2d_relu")]
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv", "conv_call2"]
    reasons = [reason for n in gm.graph.nodes for _, reason in info(n).declined]
    assert any("only module forms are fused" in r for r in reasons), reasons
    assert close(gm(x), model(x))


def test_training_mode_modules_are_not_fused():
    model = ConvBnRelu()
    gm = run(traced(model).train(), "normalize", "fuse")
    assert not any(isinstance(m, fused.FusedModule) for m in gm.modules())


def test_for_training_a_convs_batch_norm_is_kept_with_it_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    gm = run(traced(model), "normalize", "fuse", ctx=PassContext(training=True))
    kinds = [kind for op, _, kind in op_nodes(gm) if op == "call_module"]
    assert kinds == [fused.ConvBnReLU2d, fused.ConvBn2d]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(gm(x), model.eval()(x), atol=1e-6)


def test_for_training_a_linears_batch_norm_is_kept_with_it_not_folded():
    model = _warm(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4), nn.BatchNorm1d(4)),
                  (16, 6))
    gm = run(traced(model), "normalize", "fuse", ctx=PassContext(training=True, example_inputs=(torch.randn(4, 6),)))
    kinds = [kind for op, _, kind in op_nodes(gm) if op == "call_module"]
    assert kinds == [fused.LinearBnReLU1d, fused.LinearBn1d]
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-6)
