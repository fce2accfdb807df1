"""qat-to-float alone: trained QAT layers become their float layers holding the trained parameters, weight
fake-quantize nodes of exported linear calls are bypassed, and activation FakeQuantize modules stay for lower."""

import torch

import fxq
from fxq.graph_pass import PassContext
from fxq.qat import FakeQuantize, WeightFakeQuantize, enable_fake_quant
from fxq.qat.modules import is_qat
from tests.models import calibration_batches, example_inputs, make_model
from tests.passes.helpers import run


def test_trained_layers_return_to_float_with_their_trained_weights():
    prepared = fxq.prepare_qat(make_model("mlp"), None, example_inputs("mlp"))
    with torch.no_grad():
        prepared.fc1[0].weight.add_(0.5)  # fc1 is fused with its ReLU: the layer is the first member
    trained = {name: p.clone() for name, p in prepared.named_parameters()}
    gm = run(prepared, "qat-to-float", ctx=PassContext(backend="x86"))
    assert not any(is_qat(m) or isinstance(m, WeightFakeQuantize) for m in gm.modules())
    assert any(isinstance(m, FakeQuantize) for m in gm.modules())
    assert all(torch.equal(p, trained[name]) for name, p in gm.named_parameters())


def test_exported_linear_calls_read_their_weights_directly_again():
    prepared = fxq.prepare_qat(make_model("mlp"), None, example_inputs("mlp"), capture="export")
    gm = run(prepared, "qat-to-float", ctx=PassContext(backend="x86"))
    assert not any(isinstance(m, WeightFakeQuantize) for m in gm.modules())
    x = calibration_batches("mlp", n=1)[0]
    gm.eval()
    enable_fake_quant(gm, False)
    with torch.no_grad():
        assert torch.allclose(gm(*x), make_model("mlp")(*x), atol=1e-5)


def test_batch_norms_return_to_their_float_class_or_fold_into_their_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.BatchNorm2d(4))
    prepared = fxq.prepare_qat(model, None, (torch.randn(2, 3, 8, 8),))
    gm = run(prepared, "qat-to-float", ctx=PassContext(backend="x86"))
    norms = [m for m in gm.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert [type(m) for m in norms] == [torch.nn.BatchNorm2d]  # the lone one; the conv's is folded
    assert "stats_frozen" not in dict(norms[0].named_buffers())
