"""ONNX Runtime as a peer in ``fxq bench``: a model exported to ONNX and quantized by ``quantize_static`` with
its defaults (QDQ format, per-tensor weights, min/max calibration), run by its CPU execution provider. None when
onnx or onnxruntime is not installed (``pip install fxq[bench]``)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn


def ort_static_int8(model: nn.Module, names: tuple[str, ...], calibration: list[tuple], threads: int):
    """A callable taking the model's tensor inputs (in ``names`` order) and returning its first output as a
    tensor; ``model`` must take those inputs positionally. A copy is exported: the exporter changes the model it
    is given (the embeddings of a MiniLM exported in place moved to cosine 0.92 with their own earlier values)."""
    try:
        import onnxruntime
        from onnxruntime.quantization import CalibrationDataReader, quantize_static
    except ImportError:
        return None

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: t.numpy() for name, t in zip(names, batch, strict=True)} for batch in calibration])

        def get_next(self):
            return next(self.batches, None)

    directory = Path(tempfile.mkdtemp(prefix="fxq-ort-"))
    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, "output")}
    torch.onnx.export(copy.deepcopy(model), calibration[0], directory / "float.onnx", input_names=list(names),
                      output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_static(directory / "float.onnx", directory / "int8.onnx", Batches())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(directory / "int8.onnx"), options,
                                           providers=["CPUExecutionProvider"])

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor]:
        feed = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        return (torch.from_numpy(session.run(None, feed)[0]),)

    return run
