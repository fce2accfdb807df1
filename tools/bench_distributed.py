"""``fxq bench --distributed``: calibration wall time of ResNet-18 (default mapping: histogram activations) on 256
images, in one process and split over two (gloo on loopback, ``fxq.distributed.sync_observers``), one thread each,
the speed-up printed from the same run.

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

import fxq
from fxq.distributed import sync_observers
from fxq.timing import cpu_flags_line

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
    return 0


def _timed(world: int, threads: int, images: int) -> tuple[float, float]:
    """(total, sync) seconds rank 0 measured for ``world`` spawned ranks (killed if they outlive TIMEOUT_S)."""
    with tempfile.TemporaryDirectory() as out:
        context = mp.start_processes(_rank, args=(world, _free_port(), threads, images, out), nprocs=world,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"the {world} benchmark ranks did not finish within {TIMEOUT_S} s")
        total, sync = (Path(out) / "seconds").read_text().split()
        return float(total), float(sync)


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
        if rank == 0:
            end = time.perf_counter()
            (Path(out) / "seconds").write_text(f"{end - start} {end - calibrated}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(run_distributed_bench())
