"""How example inputs and calibration batches reach a model: positional arguments or keyword arguments.

A batch is a tuple (or list) of positional arguments, one tensor, or a mapping of keyword arguments (what a
Hugging Face tokenizer returns: ``model(**batch)``). To pass a dict as a model's one positional argument, wrap it
in a tuple. Captured graphs name their inputs after the model's forward arguments, so one batch calls the float
model and the quantized graph alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

from fxq.errors import ConfigError


def split_call(batch) -> tuple[tuple, dict]:
    """``batch`` as the positional and keyword arguments of one model call."""
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    raise ConfigError(f"model inputs must be a tuple of positional arguments, one tensor, or a dict of keyword "
                      f"arguments; got {type(batch).__name__}")


def without_labels(batch, inputs: int) -> tuple[object, int]:
    """``batch`` without its items past the model's ``inputs`` positional arguments (the labels of a DataLoader
    of (inputs, labels), which a call with them would reject), and how many were dropped."""
    if isinstance(batch, (tuple, list)) and len(batch) > inputs:
        return tuple(batch[:inputs]), len(batch) - inputs
    return batch, 0


def call_with(model: nn.Module, batch):
    """``model`` called on ``batch`` (see ``split_call``)."""
    args, kwargs = split_call(batch)
    return model(*args, **kwargs)


def as_positional(module: nn.Module, args: tuple, kwargs: dict, what: str) -> tuple:
    """``args`` and ``kwargs`` as the positional arguments of ``module.forward`` (defaults filling the gaps), the
    form fxq keeps example inputs in.

    Raises:
        ConfigError: the arguments do not fit the forward's signature (names ``what``).
    """
    if not kwargs:
        return args
    signature = inspect.signature(module.forward)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{what}: the example inputs do not fit forward{signature}: {err}") from err
    bound.apply_defaults()
    if bound.kwargs:
        raise ConfigError(f"{what}: forward{signature} takes {', '.join(bound.kwargs)} by keyword only; fxq "
                          "needs example inputs it can pass by position")
    return bound.args
