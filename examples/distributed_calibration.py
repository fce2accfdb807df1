"""Calibrate one model on several processes and convert it to the same int8 model on each.

    torchrun --nproc-per-node 2 examples/distributed_calibration.py

Each rank runs its share of the calibration set through its own prepared copy; leaving ``calibrating`` syncs the
observers (``fxq.distributed.sync_observers``), so every rank converts the model one process would have calibrated
on the whole set. See docs/distributed.md.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

import fxq
from fxq.distributed import calibrating


def small_cnn() -> nn.Module:
    torch.manual_seed(0)  # the same float model on every rank
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def calibration_set(images: int = 64) -> torch.Tensor:
    return torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    model = small_cnn()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 3, 32, 32),))
    data = calibration_set()
    mine = data.tensor_split(world)[rank]  # contiguous shards: in rank order they are the whole set
    with calibrating(prepared):  # an error on any rank raises on all of them, naming the rank and the node
        for batch in mine.split(8):
            prepared(batch)
    quantized = fxq.convert(prepared)

    probe = calibration_set(8)
    output = quantized(probe)
    outputs = [torch.empty_like(output) for _ in range(world)]
    dist.all_gather(outputs, output)
    if rank == 0:
        same = all(torch.equal(output, other) for other in outputs)
        error = (output - model(probe)).abs().max().item()
        print(f"{world} ranks calibrated on {len(mine)} images each; converted models identical on every rank: "
              f"{same}; largest difference from the float model on a probe batch: {error:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
