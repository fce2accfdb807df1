"""``fxq.export(qm, path, format="onnx")``: a QDQ ONNX model (QuantizeLinear / DequantizeLinear around float ops,
int8 weights as initializers with their per-channel scales), which onnxruntime runs, and fuses into int8 kernels
where it has them.

The converted model is first rewritten into float ops with explicit quantize/dequantize ops
(``fxq.exporters.decomposed``); torch's dynamo exporter then translates that, with fxq's three ops mapped here.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from fxq.errors import ConfigError
from fxq.exporters import decomposed

_INSTALL = "pip install onnx onnxscript onnxruntime"


def export(qm, path: str | os.PathLike, example_inputs=None, format: str = "onnx") -> None:
    """Write ``qm`` as a QDQ ONNX model to ``path``; the batch dimension stays dynamic where the model allows.

    Raises:
        ConfigError: ``qm`` is not converted, holds an op with no ONNX form, or onnx/onnxscript is not installed.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"fxq.export(format='onnx') needs {' and '.join(missing)}: {_INSTALL}")
    model, inputs = decomposed.decompose(qm, example_inputs)
    translations = _translations()
    try:
        torch.onnx.export(model, inputs, os.fspath(path), dynamo=True, verbose=False,
                          custom_translation_table=translations, dynamic_shapes=decomposed.batch_dynamic(inputs),
                          external_data=False)
    except Exception as err:  # an aten op with no ONNX form, or a model torch.export cannot trace: torch's error
        raise ConfigError(f"torch.onnx.export failed on the decomposed model: {err}") from err


def _translations() -> dict:
    """ONNX forms of fxq's quantize/dequantize ops (onnxscript, imported only when exporting)."""
    from onnxscript import ir
    from onnxscript import opset18 as op

    def constant(value, dtype):
        return op.Constant(value=ir.tensor(value, dtype=dtype))

    def quantize(x, scale: float, zero_point: int, dtype):
        return op.QuantizeLinear(x, constant(scale, ir.DataType.FLOAT), constant(zero_point, dtype))

    def dequantize(q, scale: float, zero_point: int):
        return op.DequantizeLinear(q, constant(scale, ir.DataType.FLOAT), constant(zero_point, q.dtype))

    def dequantize_per_channel(q, scales, zero_points, axis: int):
        return op.DequantizeLinear(q, scales, zero_points, axis=axis)

    return {decomposed.quantize: quantize, decomposed.dequantize: dequantize,
            decomposed.dequantize_per_channel: dequantize_per_channel}
