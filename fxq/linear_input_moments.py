"""The second moments of the inputs chosen Linear layers see on calibration data: mean x x^T over every input
row (token), what error-compensating rounding (``fxq.gptq``) weighs a weight's error by."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fxq.errors import CalibrationError
from fxq.model_inputs import call_with


def linear_input_moments(model: nn.Module, paths: list[str], batches: Iterable) -> dict[str, torch.Tensor]:
    """``{path: mean x x^T}`` (float64, in x in) for the Linear-like modules at ``paths`` of ``model`` (hooks are
    added for the run and removed), over ``batches`` (tuples of positional arguments or dicts of keyword
    arguments). Modules the batches never reach are absent.

    Raises:
        CalibrationError: no batches, or inputs with NaN/Inf.
    """
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def record(path):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            if not torch.isfinite(x).all():
                raise CalibrationError(f"the calibration data gives {path} non-finite inputs (NaN or Inf)")
            sums[path] = sums.get(path, 0) + x.t() @ x
            rows[path] = rows.get(path, 0) + x.shape[0]
        return hook

    hooks = [model.get_submodule(path).register_forward_pre_hook(record(path)) for path in paths]
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                call_with(model, batch)
                count += 1
    finally:
        for handle in hooks:
            handle.remove()
    if count == 0:
        raise CalibrationError("calibration_data held no batches; pass an iterable of representative inputs")
    return {path: total / rows[path] for path, total in sums.items()}
