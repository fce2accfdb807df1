"""fxq.export(format="torchscript" | "lite"): a file a fresh process without fxq loads with torch alone and runs to
the converted model's exact outputs."""

import subprocess
import sys

import pytest
import torch

import fxq
from tests.models import calibration_batches, eval_batches, example_inputs, make_model

_LOADERS = {"torchscript": "torch.jit.load", "lite": "torch.jit.mobile._load_for_lite_interpreter"}
_CHECK = """
import sys
import torch
import torch.jit.mobile
model = {loader}(sys.argv[1])
x, expected = torch.load(sys.argv[2])
assert "fxq" not in sys.modules
assert torch.equal(model(x), expected), "outputs differ"
print("same")
"""


def _quantized(backend="x86"):
    return fxq.quantize(make_model("resnet"), example_inputs("resnet"), calibration_batches("resnet", n=2),
                        backend=backend)


@pytest.mark.parametrize("format", ["torchscript", "lite"])
def test_a_fresh_process_without_fxq_loads_and_runs_the_export_exactly(format, tmp_path):
    quantized = _quantized()
    (x,) = eval_batches("resnet", n=1)[0]
    with torch.no_grad():
        torch.save((x, quantized(x)), tmp_path / "io.pt")
    fxq.export(quantized, tmp_path / "model.pt", format=format)
    done = subprocess.run([sys.executable, "-c", _CHECK.format(loader=_LOADERS[format]), str(tmp_path / "model.pt"),
                           str(tmp_path / "io.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]


def test_the_export_is_checked_on_the_given_example_inputs(tmp_path):
    quantized = _quantized()
    with pytest.raises(fxq.InputError):  # the check runs them: wrong ones fail as a call would
        fxq.export(quantized, tmp_path / "model.pt", example_inputs=torch.randn(1, 5, 32, 32))
    assert not (tmp_path / "model.pt").exists()


def test_a_model_torchscript_cannot_compile_is_refused_with_the_alternatives(tmp_path):
    with pytest.raises(fxq.ConfigError, match="TorchScript cannot compile this model.*'onnx' or 'pt2'"):
        fxq.export(_quantized("reference"), tmp_path / "model.pt", format="lite")


def test_only_converted_models_are_exported(tmp_path):
    with pytest.raises(fxq.ConfigError, match="takes a model from fxq.convert"):
        fxq.export(make_model("mlp"), tmp_path / "model.pt")


def test_an_export_that_needs_another_engine_to_load_says_which(tmp_path):
    """Loading re-packs weights for the current engine: a qnnpack model loaded under x86 computes other values."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the x86 model loads back exactly: no warning
        fxq.export(_quantized("x86"), tmp_path / "x86.pt")
    with pytest.warns(UserWarning, match="torch.backends.quantized.engine = 'qnnpack'"):
        fxq.export(_quantized("qnnpack"), tmp_path / "qnnpack.pt")


def test_a_file_that_loads_back_wrong_under_every_engine_is_refused_and_removed(tmp_path):
    """torch writes packed weights by unpacking them, and unpacking qnnpack's transposed 2x2 convolutions (what
    fxq runs 2-d transposed convolutions on, x86's own being wrong) scrambles the weights; the sigmoid's output
    qparams are x86's, which qnnpack refuses outright."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, 2, 1), torch.nn.ReLU(),
                                torch.nn.ConvTranspose2d(32, 16, 2, 2), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 1, 3, padding=1), torch.nn.Sigmoid()).eval()
    batches = [(torch.randn(2, 1, 16, 16),) for _ in range(3)]
    qm = fxq.quantize(model, batches[0], batches, backend="x86")
    with pytest.raises(fxq.ConfigError, match="loaded back, computes other values .* Export as 'onnx'"):
        fxq.export(qm, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    fxq.export(qm, tmp_path / "model.onnx", format="onnx")  # the alternative the message names works
