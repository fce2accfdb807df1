"""GPT-2's ``Conv1D`` (transformers) is a Linear with its weight stored transposed, (in, out): y = x @ W + b. fxq
treats it as the Linear it is (``fxq.dynamic`` converts it with its weight transposed), by duck typing, so fxq needs no import of transformers and a copy of the class
elsewhere is recognised too."""

from __future__ import annotations

import torch
from torch import nn


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a GPT-2-style ``Conv1D``: that class name, an ``nf`` output width and a 2-d weight of
    shape (in, nf)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.shape[1] == getattr(module, "nf", None))
