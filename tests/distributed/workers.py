"""What each of two spawned ranks runs for tests/distributed: every scenario in one process group, results saved
for the test process to compare (one spawn for all scenarios keeps the suite's start-up cost to one)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fxq
from fxq.distributed import calibrating, sync_observers
from fxq.errors import CalibrationError
from fxq.observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    Observer,
    PerChannelMinMaxObserver,
)
from fxq.qconfig import QConfig, default_weight
from fxq.qconfig_mapping import QConfigMapping
from fxq.statistics import ChannelStatistics
from tests.models import calibration_batches, example_inputs, make_model

MODEL, BATCHES = "resnet", 6

ACTIVATIONS = {
    "default": None,  # fxq.get_default_qconfig_mapping: histogram activations
    "minmax": MinMaxObserver.with_args(),
    "histogram": HistogramObserver.with_args(bins=256),
    "per_channel": PerChannelMinMaxObserver.with_args(ch_axis=1, dtype=torch.quint8, symmetric=False),
    "moving_average": MovingAverageMinMaxObserver.with_args(averaging_constant=0.1),
}
CONVERTIBLE = ("default", "minmax", "histogram", "moving_average")  # fxq lowers no per-channel activations


def mapping(kind: str) -> QConfigMapping:
    if ACTIVATIONS[kind] is None:
        return fxq.get_default_qconfig_mapping()
    return QConfigMapping().set_global(QConfig(activation=ACTIVATIONS[kind], weight=default_weight("x86")))


def shard(rank: int, world: int, stationary: bool = False) -> list[tuple]:
    """Rank r's contiguous share of the calibration batches, so the ranks' shards in rank order are the data.
    Unless ``stationary``, the last batch is scaled up: ranges grow inside rank 1's shard, so its histograms are
    re-binned from a range one process on all the data never had."""
    batches = calibration_batches(MODEL, n=BATCHES)
    if not stationary:
        batches[-1] = (batches[-1][0] * 3,)
    per_rank = len(batches) // world
    return batches[rank * per_rank:(rank + 1) * per_rank]


def prepared_model(kind: str):
    return fxq.prepare(make_model(MODEL), mapping(kind), example_inputs(MODEL))


def recorders(prepared) -> dict:
    """What calibration records (and sync_observers merges): observers and channel statistics."""
    return {name: m for name, m in prepared.named_modules() if isinstance(m, (Observer, ChannelStatistics))}


def observer_states(prepared) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in recorders(prepared).items()}


def converted_state(prepared) -> dict:
    """The converted model's tensors and its output on a probe batch."""
    quantized = fxq.convert(prepared, runtime="graph")
    probe = calibration_batches(MODEL, n=1, seed=7)[0]
    return {"state": {k: v.clone() for k, v in quantized.state_dict().items()}, "output": quantized(*probe)}


def calibration(rank: int, world: int) -> dict:
    results = {}
    for kind in ACTIVATIONS:
        prepared = prepared_model(kind)
        with calibrating(prepared):
            for batch in shard(rank, world, stationary=kind == "moving_average"):
                prepared(*batch)
        results[kind] = {"observers": observer_states(prepared),
                         "converted": converted_state(prepared) if kind in CONVERTIBLE else None}
    return results


def empty_rank(rank: int, world: int) -> dict:
    """Rank 1 sees no data at all."""
    prepared = prepared_model("histogram")
    with calibrating(prepared):
        for batch in shard(rank, world) if rank == 0 else []:
            prepared(*batch)
    return {"observers": observer_states(prepared)}


def _error_of(run) -> str | None:
    try:
        run()
    except CalibrationError as error:
        return str(error)
    return None


def nan_on_rank_1(rank: int, world: int) -> dict:
    prepared = prepared_model("default")

    def run():
        with calibrating(prepared, timeout=timedelta(seconds=10)):
            for index, (x,) in enumerate(shard(rank, world)):
                if rank == 1 and index == 1:
                    x = x.clone()
                    x[0, 0, 0, 0] = float("nan")
                prepared(x)
    return {"error": _error_of(run)}


def failure_on_rank_0(rank: int, world: int) -> dict:
    """Not a calibration error: the loop itself fails on rank 0 (a data loader, say)."""
    prepared = prepared_model("minmax")

    def run():
        with calibrating(prepared, timeout=timedelta(seconds=10)):
            if rank == 0:
                raise OSError("shard file missing")
    return {"error": _error_of(run)}


def qat_with_ddp(rank: int, world: int) -> dict:
    """A few DDP steps of the default QAT model; the first batch runs before wrapping, so DDP broadcasts rank 0's
    initial learned scales with the weights. find_unused_parameters: a quantizer rounding with its input's qparams
    (after an average pool) leaves its own learned scale out of the graph."""
    torch.manual_seed(0)
    prepared = fxq.prepare_qat(make_model(MODEL), None, example_inputs(MODEL))
    batches = shard(rank, world)
    with torch.no_grad():
        prepared(*batches[0])
    ddp = DistributedDataParallel(prepared, find_unused_parameters=True)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    for batch in batches:
        optimizer.zero_grad()
        ddp(*batch).square().mean().backward()
        optimizer.step()
    before = {k: v.clone() for k, v in prepared.state_dict().items()}
    sync_observers(ddp)
    after = {k: v.clone() for k, v in prepared.state_dict().items()}
    return {"before_sync": before, "after_sync": after, "converted": converted_state(prepared)}


def silent_rank_1(rank: int, world: int) -> dict:
    """Rank 1 never calls sync_observers (hung, or gone): rank 0 gives up after its timeout. Last, as it leaves
    the process group unusable."""
    prepared = prepared_model("minmax")
    if rank == 1:
        return {"error": None}
    return {"error": _error_of(lambda: sync_observers(prepared, timeout=timedelta(seconds=2)))}


SCENARIOS = {"calibration": calibration, "empty_rank": empty_rank, "nan_on_rank_1": nan_on_rank_1,
             "failure_on_rank_0": failure_on_rank_0, "qat_with_ddp": qat_with_ddp, "silent_rank_1": silent_rank_1}


def run(rank: int, world: int, port: int, out_dir: str, scenarios: list[str]) -> None:
    """The entry point ``torch.multiprocessing`` spawns."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=30))
    try:
        results = {name: SCENARIOS[name](rank, world) for name in scenarios}
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
