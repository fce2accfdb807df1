"""``fxq.export(qm, path, format="pt2")``: a ``torch.export`` ExportedProgram saved with ``torch.export.save``,
which ``torch.export.load(path).module()`` runs with nothing but torch.

Native int8 kernels take quantized tensors and prepacked weights, which torch.export cannot trace, so the program
is made from the decomposed model (``fxq.exporters.decomposed``): float aten ops, int8 weights dequantized in the
graph, and quantize/dequantize written as aten arithmetic (round, clamp, casts), not as fxq's own ops, so loading
needs no fxq.
"""

from __future__ import annotations

import os

import torch

from fxq.errors import ConfigError
from fxq.exporters import decomposed


def export(qm, path: str | os.PathLike, example_inputs=None, format: str = "pt2") -> None:
    """Save ``qm`` as an ExportedProgram at ``path``; the batch dimension stays dynamic where the model allows.

    Raises:
        ConfigError: ``qm`` is not converted, holds an op with no float form, or torch.export cannot trace it.
    """
    model, inputs = decomposed.decompose(qm, example_inputs)
    try:
        program = torch.export.export(model, inputs, dynamic_shapes=decomposed.batch_dynamic(inputs))
    except Exception as err:
        raise ConfigError(f"torch.export failed on the decomposed model: {err}") from err
    torch.export.save(program.run_decompositions(decomposed.ATEN), os.fspath(path))
