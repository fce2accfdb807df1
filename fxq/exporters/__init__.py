"""``fxq.export(qm, path, format=...)``: a converted model in a form other runtimes load without fxq.

Each format is a module of its own here with one ``export(qm, path, example_inputs)`` function:
``torchscript`` and ``lite`` (``fxq.exporters.torchscript``), ``onnx`` (``fxq.exporters.onnx``) and ``pt2``
(``fxq.exporters.pt2``).
"""

from __future__ import annotations

import importlib
import os

from torch.fx import GraphModule

from fxq.errors import ConfigError

FORMATS = {"torchscript": "torchscript", "lite": "torchscript", "onnx": "onnx", "pt2": "pt2"}


def export(qm: GraphModule, path: str | os.PathLike, format: str = "torchscript", example_inputs=None) -> None:
    """Write the converted model ``qm`` to ``path`` in ``format`` ("torchscript", "lite", "onnx" or "pt2").

    Args:
        example_inputs: inputs to trace or check the export with; defaults to the example inputs ``fxq.prepare``
            kept (or inputs shaped like them).
    Raises:
        ConfigError: an unknown format, or a model that is not a converted one.
    """
    if format not in FORMATS:
        raise ConfigError(f"fxq.export(format={format!r}) is not a known format; use one of {sorted(FORMATS)}")
    module = importlib.import_module(f"fxq.exporters.{FORMATS[format]}")
    module.export(qm, path, example_inputs, format=format)
