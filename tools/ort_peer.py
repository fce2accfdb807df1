"""ONNX Runtime as a peer in ``fxq bench``: a model exported to ONNX, run as it is (fp32) or quantized by
``quantize_static`` with its defaults (QDQ format, per-tensor weights, min/max calibration), by its CPU execution
provider. None when onnx or onnxruntime is not installed (``pip install fxq[bench]``).

Each peer is a callable taking the model's tensor inputs (in ``names`` order) and returning its first output as
a one-element tuple; ``model`` must take those inputs positionally. A copy is exported: the exporter changes the
model it is given (the embeddings of a MiniLM exported in place moved to cosine 0.92 with their own earlier
values). ``dynamic`` lists the input dimensions left free (batch, sequence); the others are fixed to those of
the first calibration batch, which lets ONNX Runtime plan shapes ahead as it would for a deployed model.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

SETTLE_S = 0.05  # seconds of sleep before each timed variant next to these peers (their pool spins: fxq.timing)


def ort_fp32(model: nn.Module, names: tuple[str, ...], calibration: list[tuple], threads: int,
             dynamic: tuple[int, ...] = (0, 1)):
    """The exported float model on ONNX Runtime (see the module docstring)."""
    if not _available():
        return None
    return _session(_export(model, names, calibration[0], dynamic), names, threads)


def ort_static_int8(model: nn.Module, names: tuple[str, ...], calibration: list[tuple], threads: int,
                    dynamic: tuple[int, ...] = (0, 1)):
    """The exported model quantized by ``quantize_static`` on ``calibration`` (see the module docstring)."""
    if not _available():
        return None
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: t.numpy() for name, t in zip(names, batch, strict=True)} for batch in calibration])

        def get_next(self):
            return next(self.batches, None)

    float_path = _export(model, names, calibration[0], dynamic)
    int8_path = float_path.with_name("int8.onnx")
    here = os.getcwd()
    os.chdir(float_path.parent)  # its shape inference leaves temporary files in the working directory
    try:
        quantize_static(float_path, int8_path, Batches())
    finally:
        os.chdir(here)
    return _session(int8_path, names, threads)


def _available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return False
    onnxruntime.set_default_logger_severity(3)  # errors only: it lists every initializer its optimizer drops
    return True


def _export(model: nn.Module, names: tuple[str, ...], example: tuple, dynamic: tuple[int, ...]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="fxq-ort-")) / "float.onnx"
    labels = ("batch", "sequence")
    axes = {name: {dim: labels[min(i, 1)] for i, dim in enumerate(dynamic)} for name in (*names, "output")}
    torch.onnx.export(copy.deepcopy(model), example, path, input_names=list(names), output_names=["output"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _session(path: Path, names: tuple[str, ...], threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor]:
        feed = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        return (torch.from_numpy(session.run(None, feed)[0]),)

    return run
