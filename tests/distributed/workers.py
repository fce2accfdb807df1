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
import fxq.distributed
from fxq.distributed import calibrating, sync_observers
from fxq.errors import CalibrationError, FxqError
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
from fxq.tuning.proxy import OutputCosine
from tests.models import calibration_batches, example_inputs, make_model
from tests.tuning.models import OneOutlier, batches

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
    initial learned scales with the weights. No find_unused_parameters: a quantizer rounding with its input's
    qparams (after an average pool) keeps its own learned scale in the graph, with a zero gradient."""
    torch.manual_seed(0)
    prepared = fxq.prepare_qat(make_model(MODEL), None, example_inputs(MODEL))
    batches = shard(rank, world)
    with torch.no_grad():
        prepared(*batches[0])
    ddp = DistributedDataParallel(prepared)
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


def tune_case() -> tuple:
    """(model, calibration batches, a deterministic metric) whose search goes past int8 everywhere: fc2 costs
    accuracy. The speed rule is off, so no timing decides anything (latency only breaks ties of equal plans)."""
    model = OneOutlier().eval()
    return model, batches(32, 6), OutputCosine(model, batches(32, 2, seed=1))


TUNE_OPTIONS = {"runtime": "graph", "keep_slow_float": False}
_FAILING = {**TUNE_OPTIONS, "timeout": timedelta(seconds=20)}  # a hang fails the test long before the deadline
PROBE = batches(32, 1, seed=5)[0]


def tuned(rank: int, world: int) -> dict:
    """fxq.distributed.tune, recording this rank's share: its evaluate calls and the layers it measured."""
    model, data, metric = tune_case()
    calls, measured = [], []

    def evaluate(candidate) -> float:
        calls.append(candidate)
        return metric(candidate)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "timing layers":
            measured.append(total)

    result = fxq.distributed.tune(model, data[0], data, evaluate, progress=progress, **TUNE_OPTIONS)
    with torch.no_grad():
        output = result.model(*PROBE)
    return {"plan": result.plan.assignments, "report": result.report.to_dict(), "output": output,
            "evaluate_calls": len(calls), "layers_measured": max(measured, default=0)}


def evaluate_fails_on_rank_1(rank: int, world: int) -> dict:
    model, data, metric = tune_case()

    def evaluate(candidate) -> float:
        if rank == 1:
            raise RuntimeError("metric server unreachable")
        return metric(candidate)

    return {"error": _tune_error(lambda: fxq.distributed.tune(model, data[0], data, evaluate, **_FAILING))}


def options_differ(rank: int, world: int) -> dict:
    """Rank 1's budget is loose enough for int8 everywhere: it would stop where rank 0 searches on."""
    model, data, metric = tune_case()
    options = {**_FAILING, "max_drop": 0.5 if rank == 1 else 0.01}
    return {"error": _tune_error(lambda: fxq.distributed.tune(model, data[0], data, metric, **options))}


def _tune_error(run) -> str | None:
    try:
        run()
    except FxqError as error:
        return str(error)
    return None


TUNE_SCENARIOS = {"tuned": tuned, "evaluate_fails_on_rank_1": evaluate_fails_on_rank_1,
                  "options_differ": options_differ}


def run(rank: int, world: int, port: int, out_dir: str, scenarios: list[str]) -> None:
    """The entry point ``torch.multiprocessing`` spawns."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=30))
    try:
        results = {name: {**SCENARIOS, **TUNE_SCENARIOS}[name](rank, world) for name in scenarios}
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
