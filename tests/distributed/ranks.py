"""Spawning the test ranks: ``workers.run`` on WORLD gloo processes over loopback, killed past a deadline, and the
exact comparison of what they return."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.distributed import workers

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(out: Path, scenarios: list[str], deadline_s: float) -> list[dict]:
    """Each rank's results of ``scenarios``; the ranks are killed (and the test fails) past ``deadline_s``."""
    context = mp.start_processes(workers.run, args=(WORLD, free_port(), str(out), scenarios), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + deadline_s
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {deadline_s} s")
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def equal(a, b) -> bool:
    """Bit-identical tensors, or dicts of them."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)
