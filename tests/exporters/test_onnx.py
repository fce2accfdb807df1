"""fxq.export(format="onnx"): QDQ models that onnxruntime runs in a process without fxq, matching fxq's outputs;
clear errors for models and ops it cannot export."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import fxq
import fxq.exporters.onnx as onnx_exporter
from fxq.nn.quantized.dynamic_linear import DynamicLinear
from tests.models import calibration_batches, eval_batches, example_inputs, make_model, sqnr

# Runs an ONNX file on .npy inputs and saves its first output, in a fresh interpreter that never imports fxq.
_RUN = """
import sys
import numpy as np
import onnxruntime as ort
path, level, out, *inputs = sys.argv[1:]
options = ort.SessionOptions()
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
session = ort.InferenceSession(path, options)
feeds = {arg.name: np.load(name) for arg, name in zip(session.get_inputs(), inputs, strict=True)}
np.save(out, session.run(None, feeds)[0])
assert "fxq" not in sys.modules
"""

# onnxruntime's int8 kernels on x86 CPUs without VNNI add pairs of uint8 x int8 products in int16, which saturates
# for weights outside [-64, 63] (fxq's x86 backend keeps weights in 7 bits for the same reason). qnnpack and
# reference models use all 8 bits, so they are run with ORT's basic optimizations: the QDQ graph as written
# (float ops between quantize/dequantize), without fusing it into those kernels. See docs/export.md.
_LEVEL = {"x86": "ORT_ENABLE_ALL", "qnnpack": "ORT_ENABLE_BASIC", "reference": "ORT_ENABLE_BASIC"}


def run_in_fresh_process(path, inputs, tmp_path, level="ORT_ENABLE_ALL") -> torch.Tensor:
    names = []
    for i, x in enumerate(inputs):
        names.append(str(tmp_path / f"input{i}.npy"))
        np.save(names[-1], x.numpy())
    out = tmp_path / "output.npy"
    subprocess.run([sys.executable, "-c", _RUN, str(path), level, str(out), *names], check=True)
    return torch.from_numpy(np.load(out))


def _dequantized(value):
    return value.dequantize() if isinstance(value, torch.Tensor) and value.is_quantized else value


# Every backend at least once, and the kernels of every test model (resnet's convolutions and add_relu are
# mobilenet's and test_pt2's; all twelve pairs are measured in docs/export.md). Exports take seconds each.
@pytest.mark.parametrize("name, backend", [("mlp", "qnnpack"), ("mobilenet", "reference"), ("transformer", "x86")])
def test_onnxruntime_matches_fxq_in_a_fresh_process(tmp_path, name, backend):
    qm = fxq.quantize(make_model(name), example_inputs(name), calibration_batches(name), backend=backend)
    path = tmp_path / "model.onnx"
    fxq.export(qm, path, format="onnx")
    x = eval_batches(name)[0][0]  # batch 8, exported with batch 2: the batch dimension is dynamic
    with torch.no_grad():
        expected = _dequantized(qm(x))
    assert sqnr(expected, run_in_fresh_process(path, [x], tmp_path, _LEVEL[backend])) >= 30
    graph = onnx.load(path).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [init for init in graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 3  # weights are stored in 8 bits


def test_export_captured_bert_runs_in_onnxruntime(tmp_path):
    from tests.capture.test_capture import _batches, _bert

    qm = fxq.quantize(_bert(layers=1), _batches(1, 0, 16)[0], _batches(1, 1, 16), backend="x86", capture="export")
    path = tmp_path / "bert.onnx"
    fxq.export(qm, path, format="onnx")
    ids, mask = _batches(1, 2, 16)[0]
    with torch.no_grad():
        expected = qm(ids, mask).last_hidden_state
    assert sqnr(expected, run_in_fresh_process(path, [ids, mask], tmp_path)) >= 30
    # the embedding tables are stored as 8-bit levels with a scale and offset per row
    tables = [init for init in onnx.load(path).graph.initializer
              if init.data_type == onnx.TensorProto.UINT8 and len(init.dims) == 2]
    # words and positions (the token-type lookup reads constant ids, which the exporter folds)
    assert {30522, 512} <= {table.dims[0] for table in tables}


def test_an_exported_swin_with_contiguous_calls_runs_in_onnxruntime(tmp_path):
    """Swin's exported graph keeps ``x.transpose(1, 2).contiguous()`` as ``aten.contiguous``, which torch.onnx
    took for a no-op, turning the reshape after it into an invalid view."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                     window_size=4)
    model = transformers.SwinModel(config).eval()
    batches = [(torch.randn(2, 3, 32, 32),) for _ in range(4)]
    qm = fxq.quantize(model, batches[0], batches)
    assert any(n.target is torch.ops.aten.contiguous.default for n in qm.graph.nodes)
    path = tmp_path / "swin.onnx"
    fxq.export(qm, path, format="onnx")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = qm(x).last_hidden_state
    assert sqnr(expected, run_in_fresh_process(path, [x], tmp_path)) >= 30


@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_models_that_are_not_converted_are_refused(format, tmp_path):
    model = make_model("mlp")
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), example_inputs("mlp"), backend="x86")
    with pytest.raises(fxq.ConfigError, match="prepared model"):
        fxq.export(prepared, tmp_path / "m", format=format)
    with pytest.raises(fxq.ConfigError, match="converted model"):
        fxq.export(model, tmp_path / "m", format=format)


def test_missing_onnxscript_names_the_install_command(monkeypatch, tmp_path):
    find_spec = onnx_exporter.importlib.util.find_spec
    monkeypatch.setattr(onnx_exporter.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxscript" else find_spec(name, *args))
    qm = fxq.quantize(make_model("mlp"), example_inputs("mlp"), calibration_batches("mlp", 1), backend="x86")
    with pytest.raises(fxq.ConfigError, match="needs onnxscript: pip install onnx onnxscript onnxruntime"):
        fxq.export(qm, tmp_path / "m.onnx", format="onnx")


def test_a_module_with_no_float_form_is_named(tmp_path):
    qm = fxq.quantize(make_model("mlp"), example_inputs("mlp"), calibration_batches("mlp", 1), backend="x86")
    qm.fc3 = DynamicLinear(qm.fc3.qweight, qm.fc3.bias)  # float in, float out: the model still runs
    qm(*example_inputs("mlp"))
    with pytest.raises(fxq.ConfigError, match="node 'fc3'.*DynamicLinear"):
        fxq.export(qm, tmp_path / "m.onnx", format="onnx")
