"""Run code with a given ``torch.backends.quantized.engine``: weights must be prepacked for the engine whose
kernels will use them, whatever engine the caller has selected."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def using_engine(engine: str | None):
    """Select ``engine`` for the duration of the block (no-op for None), restoring the previous one."""
    if engine is None or engine == torch.backends.quantized.engine:
        yield
        return
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
