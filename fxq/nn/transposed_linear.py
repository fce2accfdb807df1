"""GPT-2's ``Conv1D`` (transformers) is a Linear with its weight stored transposed, (in, out): y = x @ W + b. fxq
treats it as the Linear it is, by duck typing (no import of transformers; a copy of the class elsewhere is
recognised too): ``fxq.dynamic`` converts it with its weight transposed, and static quantization and QAT
capture a copy of the model in which each one is an ``nn.Linear`` at the same path."""

from __future__ import annotations

import torch
from torch import nn

from fxq.nn.constant_linear import linear_from_constants


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a GPT-2-style ``Conv1D``: that class name, an ``nf`` output width and a 2-d weight of
    shape (in, nf)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.shape[1] == getattr(module, "nf", None))


def as_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what the ``Conv1D`` ``module`` does (its weight transposed, a new tensor)."""
    return linear_from_constants(module.weight.t().contiguous(), module.bias,
                                 requires_grad=module.weight.requires_grad)


def replace_transposed_linears(model: nn.Module) -> list[str]:
    """Swap every ``Conv1D`` in ``model`` (changed in place: pass a copy) for its ``as_linear``; their paths."""
    paths = [path for path, module in model.named_modules() if path and is_transposed_linear(module)]
    for path in paths:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, as_linear(model.get_submodule(path)))
    return paths
