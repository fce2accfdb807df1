"""Fused float functions: an elementwise op and the ReLU after it, as one call so one observer (and later one
quantized kernel) covers both. Fusion puts these in the graph in place of ``relu(a + b)``."""

from __future__ import annotations

import torch


def add_relu(a, b):
    """relu(a + b)."""
    return torch.relu(a + b)


def mul_relu(a, b):
    """relu(a * b)."""
    return torch.relu(a * b)
