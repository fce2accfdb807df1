"""``fxq bench --distributed``: calibration wall time of ResNet-18 (default mapping: histogram activations) on 256
images, in one process and split over two (gloo on loopback, ``fxq.distributed.sync_observers``), one thread each,
the speed-up printed from the same run; then ``fxq.tune`` in one process against ``fxq.distributed.tune`` on two,
on a 12-layer MLP with two outlier layers, with the plans compared.

Timed per world size: from a barrier after every rank has prepared its model to the end of the sync (each rank
calibrating its share of the batches, then the exchange), as rank 0 sees it. Starting the processes, importing torch
and ``prepare`` are left out: they are paid once per job, not per image.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fxq.tools import bench_models as zoo
from torch import nn

import fxq
import fxq.distributed
from fxq.distributed import sync_observers
from fxq.timing import cpu_flags_line
from fxq.tuning.proxy import OutputCosine

IMAGES, BATCH, TIMEOUT_S = 256, 32, 600


def run_distributed_bench(threads: int = 1, images: int = IMAGES, worlds: tuple[int, ...] = (1, 2)) -> int:
    """Print the calibration wall time for each number of processes in ``worlds`` and the speed-ups over the
    first; returns the exit code."""
    print(cpu_flags_line())
    print("load average before the run: " + " ".join(f"{load:.2f}" for load in os.getloadavg()) +
          f" on {os.cpu_count()} CPUs (other work on the machine takes cores from the 2-process run)")
    print(f"ResNet-18, {images} images 3x224x224 in batches of {BATCH}, {threads} thread(s) per process, "
          "default mapping (histogram activations)")
    seconds = {world: _timed(world, threads, images) for world in worlds}
    for world, (elapsed, sync) in seconds.items():
        speedup = seconds[worlds[0]][0] / elapsed
        print(f"{world} process(es): calibration + sync {elapsed:.2f} s (sync, with waiting for the slowest rank: {sync:.2f} s), "
              f"{images / elapsed:.1f} images/s, speed-up x{speedup:.2f}")
    alone, plan = _tune_alone(threads)
    results = [text.split("|") for text in _spawned(_tune_rank, 2, threads)]
    together = float(results[0][0])
    print(f"fxq.tune, 12-layer MLP, output-cosine metric: 1 process {alone:.2f} s, 2 processes {together:.2f} s, "
          f"speed-up x{alone / together:.2f}; plan {plan}, the same on every rank and as one process: "
          f"{all(found == str(plan) for _, found in results)}")
    return 0


def _timed(world: int, threads: int, images: int) -> tuple[float, float]:
    """(total, sync) seconds rank 0 measured for ``world`` spawned ranks calibrating."""
    total, sync = _spawned(_rank, world, threads, images)[0].split()
    return float(total), float(sync)


def _spawned(target, world: int, *args) -> list[str]:
    """What each rank of ``target(rank, world, port, *args, out)`` wrote to ``out/rank<i>``; the ranks are killed
    if they outlive TIMEOUT_S."""
    with tempfile.TemporaryDirectory() as out:
        context = mp.start_processes(target, args=(world, _free_port(), *args, out), nprocs=world, join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"the {world} benchmark ranks did not finish within {TIMEOUT_S} s")
        return [(Path(out) / f"rank{rank}").read_text() for rank in range(world)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, threads: int, images: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = zoo.warm_batch_norm(zoo.ResNet18(), (8, 3, 224, 224))
        prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(), zoo.image_batches(1, seed=0)[0])
        mine = [zoo.image_batches(1, seed=1000 + index, shape=(BATCH, 3, 224, 224))[0]  # the same batch i on any rank
                for index in range(rank, images // BATCH, world)]
        dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            for batch in mine:
                prepared(*batch)
        calibrated = time.perf_counter()
        sync_observers(prepared)
        dist.barrier()
        end = time.perf_counter()
        (Path(out) / f"rank{rank}").write_text(f"{end - start} {end - calibrated}")
    finally:
        dist.destroy_process_group()


class _Deep(nn.Module):
    """12 Linear+ReLU layers; layers 3 and 8 put a 3000x outlier in channel 0, which the next layer ignores, so
    the search has layers to keep float."""

    def __init__(self, depth: int = 12, width: int = 256) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        with torch.no_grad():
            for index in (3, 8):
                self.layers[index].weight[0].mul_(3000.0)
                self.layers[index].bias[0] = 3000.0
                self.layers[index + 1].weight[:, 0] = 0.0

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


def _tune_case():
    model, generator = _Deep().eval(), torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 256, generator=generator),) for _ in range(40)]
    return model, batches[:8], OutputCosine(model, batches[8:])


_TUNE_OPTIONS = {"runtime": "graph", "keep_slow_float": False, "max_drop": 0.001}


def _tune_alone(threads: int) -> tuple[float, dict]:
    torch.set_num_threads(threads)
    model, calibration, metric = _tune_case()
    start = time.perf_counter()
    result = fxq.tune(model, calibration[0], calibration, metric, **_TUNE_OPTIONS)
    return time.perf_counter() - start, result.plan.assignments


def _tune_rank(rank: int, world: int, port: int, threads: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, calibration, metric = _tune_case()
        dist.barrier()
        start = time.perf_counter()
        result = fxq.distributed.tune(model, calibration[0], calibration, metric, **_TUNE_OPTIONS)
        dist.barrier()
        (Path(out) / f"rank{rank}").write_text(f"{time.perf_counter() - start}|{result.plan.assignments}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(run_distributed_bench())
