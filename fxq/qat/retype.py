"""Give a module another class without re-initialising it: how QAT swaps a layer for its trainable form and back
while keeping the very same parameters and buffers (an optimizer built on one sees the other's updates)."""

from __future__ import annotations

from torch import nn


def retyped(module: nn.Module, cls: type) -> nn.Module:
    """A new ``cls`` object holding ``module``'s state (parameters, buffers, settings), without re-initialising."""
    made = cls.__new__(cls)
    made.__dict__.update(module.__dict__)
    made._parameters, made._buffers, made._modules = dict(module._parameters), dict(module._buffers), \
        dict(module._modules)
    return made
