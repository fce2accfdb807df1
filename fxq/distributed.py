"""Calibration and QAT over ``torch.distributed``: each rank runs its shard of the data through its own prepared
copy, then ``sync_observers`` gives every rank the statistics of all the data, so ``fxq.convert`` builds the same
model everywhere.

Every rank sends every other one its observers (one all-gather of pickled copies) and merges them itself, in rank
order, with ``Observer.merge``. Merging locally rather than reducing with collectives keeps the result bit-identical
on every rank (it does not depend on how a collective sums) and makes it what one process gets by merging the
ranks' observers in that order: min/max are exact, histograms are re-binned as ``merge`` does, moving averages are
weighted by the batches each rank saw. See docs/distributed.md.

Failures never hang the others: the same exchange carries each rank's status (the error it hit while calibrating,
or an observer holding NaN/Inf), and every collective waits at most ``timeout``. Any failure makes every rank raise
the same ``CalibrationError`` naming the rank and the node.

``tune`` is ``fxq.tune`` with its independent measurements shared among the ranks the same way: one all-gather
per step carries every rank's results (or its failure), and every decision is taken from them, so every rank
returns the same plan.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fxq.errors import CalibrationError, ConfigError, FxqError, first_line
from fxq.observers import Observer
from fxq.qat.batch_norm import FreezableBatchNorm
from fxq.qat.batch_norm_statistics import reestimate_bn_stats
from fxq.qat.recent_batches import RecentBatches
from fxq.statistics import ChannelStatistics
from fxq.tuning import search

DEFAULT_TIMEOUT = timedelta(seconds=60)
TUNE_TIMEOUT = timedelta(minutes=30)  # the ranks wait for one another's evaluations, which take what they take


def sync_observers(prepared: nn.Module, group: Any = None, timeout: timedelta = DEFAULT_TIMEOUT,
                   failure: BaseException | None = None) -> None:
    """Give every rank's ``prepared`` (from ``fxq.prepare`` or ``fxq.prepare_qat``, or ``DistributedDataParallel``
    holding it) the observer state (and channel statistics) of all ranks' calibration data. Call it on every rank of
    ``group`` (None: the default group) after calibrating and before ``fxq.convert``.

    Each observer becomes rank 0's merged with rank 1's, then rank 2's, ...: learned QAT scales stay rank 0's
    (DistributedDataParallel keeps parameters equal anyway). The calibration batches kept for ``convert``'s
    ``sensitivity-ranges`` become those of the last rank that kept any, on every rank. Batch norms of a QAT model
    that ``convert`` would measure again on the last training batches are measured now on every rank's recorded
    batches and averaged weighted by samples, as one process measuring on all of them would; other norms take
    rank 0's statistics.

    Args:
        timeout: how long each of the (two) collectives may wait for the other ranks.
        failure: the exception this rank hit while calibrating, so the other ranks raise too instead of waiting
            (``calibrating`` passes it).

    Raises:
        CalibrationError: on every rank, when any rank passed a ``failure``, holds an observer with NaN/Inf, or
            could not measure its batch norms; or when the exchange failed or timed out (a rank crashed, or did
            not call this).
        ConfigError: on every rank, when the ranks' models hold different observers or observer settings.
    """
    if isinstance(prepared, DistributedDataParallel):
        prepared = prepared.module
    me = dist.get_rank(group)
    observers = _observers(prepared)
    status = _describe(failure) if failure is not None else _bad_observer(observers)
    norms = {}
    if status is None:
        try:
            norms = _local_norm_statistics(prepared)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the other ranks must hear of it
            failure, status = error, _describe(error)
    payload = {"status": status}
    samples = _calibration_samples(prepared)
    if status is None:
        outside = {id(m): None for m in prepared.modules() if isinstance(m, Observer)}
        payload["observers"] = {name: _detached(obs, outside) for name, obs in observers.items()}
        payload["norms"] = norms
        payload["samples"] = {name: recorder.batches for name, recorder in samples.items()}
    gathered = _all_gather(payload, group, timeout, me)
    failed = [(rank, p["status"]) for rank, p in enumerate(gathered) if p["status"] is not None]
    if failed:
        rank, (node, message) = failed[0]
        raise CalibrationError(f"distributed calibration failed on rank {rank} at node {node!r}: {message}"
                               + (f" ({len(failed) - 1} more rank(s) failed too)" if len(failed) > 1 else "")) \
            from failure
    for rank, other in enumerate(gathered):
        if other["observers"].keys() != gathered[0]["observers"].keys():
            raise ConfigError(f"rank {rank}'s prepared model has other observers than rank 0's: prepare the same "
                              "model with the same mapping and example inputs on every rank")
    for name, observer in observers.items():
        merged = gathered[0]["observers"][name]
        for other in gathered[1:]:
            merged.merge(other["observers"][name])
        _assign(observer, merged)
    _combine_norms(prepared, [p["norms"] for p in gathered])
    for name, recorder in samples.items():  # as one process seeing the ranks' data in rank order would keep
        kept = [p["samples"].get(name) for p in gathered]
        recorder.keep_batches(next((batches for batches in reversed(kept) if batches), []))


@contextmanager
def calibrating(prepared: nn.Module, group: Any = None, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[nn.Module]:
    """``with calibrating(prepared): <run this rank's batches>``, then ``sync_observers`` on leaving; an exception
    inside is passed on to every rank (all raise ``CalibrationError`` naming this rank and the node) rather than
    leaving the others waiting in the exchange."""
    try:
        yield prepared
    except Exception as error:
        sync_observers(prepared, group, timeout, failure=error)  # raises, on every rank
    else:
        sync_observers(prepared, group, timeout)


def tune(model: nn.Module, example_inputs, calibration_data: Iterable, evaluate: Callable | None = None, *,
         group: Any = None, timeout: timedelta = TUNE_TIMEOUT, **options) -> search.TuneResult:
    """``fxq.tune`` with its work shared among the ranks of ``group`` (None: the default group); every rank returns
    the same plan and model. A collective: call it on every rank, with the same model, data and options.

    Each rank times and measures the sensitivity of every world-th layer; ranks 0 and 1 score the float model and
    the first plan; each round of the binary search probes one plan per rank; the other steps run on rank 0 while
    the rest wait. Every plan is calibrated on all of ``calibration_data`` on the rank that builds it: the ranks
    build different plans, so there is no shard to sync. Timings of a layer or a plan come from the rank that
    measured them (latencies relative to the float model timed there, scaled to rank 0's float time).

    Args:
        options: ``fxq.tune``'s (``max_drop``, ``backend``, ``max_evaluations``, ``progress``, ...).
        timeout: how long a rank waits for the others at each exchange: longer than the slowest step (an
            evaluation). The process group's own timeout bounds it too. An error on a rank reaches the others
            at once.
    Raises:
        FxqError: on every rank, naming the rank, when any rank's share raised (``evaluate`` did, say), when the
            ranks' searches differ (their models, data or options do), or when an exchange failed or timed out.
    """
    return search.tune(model, example_inputs, calibration_data, evaluate, spread=_Ranks(group, timeout), **options)


class _Ranks(search.Spread):
    """Rank r runs items r, r + world, ...; one all-gather gives every rank all the results, or every failure."""

    def __init__(self, group: Any, timeout: timedelta) -> None:
        self.group, self.timeout = group, timeout
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    def map(self, work: Callable[[list], list], items: Sequence) -> list:
        items, results, status, failure = list(items), [], None, None
        try:
            results = work(items[self.rank::self.world])
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the other ranks must hear of it
            failure, status = error, f"{type(error).__name__}: {first_line(error)}"
        payload = {"status": status, "items": items, "results": results}
        gathered = _all_gather(payload, self.group, self.timeout, self.rank, "fxq.distributed.tune", FxqError)
        failed = [(rank, p["status"]) for rank, p in enumerate(gathered) if p["status"] is not None]
        if failed:
            rank, message = failed[0]
            raise FxqError(f"distributed tuning failed on rank {rank}: {message}"
                           + (f" ({len(failed) - 1} more rank(s) failed too)" if len(failed) > 1 else "")) \
                from failure
        for rank, other in enumerate(gathered):
            if other["items"] != gathered[0]["items"]:
                raise FxqError(f"rank {rank}'s tuning search went another way than rank 0's: call "
                               "fxq.distributed.tune with the same model, data and options on every rank")
        return [gathered[index % self.world]["results"][index // self.world] for index in range(len(items))]


def _observers(prepared: nn.Module) -> dict[str, Observer | ChannelStatistics]:
    """What calibration records, by name: observers not inside another (a fake quantizer merges its own), and
    the channel statistics some passes record besides (bias correction's input means)."""
    found: dict[str, Observer | ChannelStatistics] = {}
    for name, module in prepared.named_modules():
        if isinstance(module, (Observer, ChannelStatistics)) and \
                not any(name.startswith(outer + ".") for outer in found):
            found[name] = module
    return found


def _calibration_samples(prepared: nn.Module) -> dict[str, RecentBatches]:
    """The recorders keeping calibration batches for ``convert`` (``record-calibration-sample``), by name."""
    return {name: module for name, module in prepared.named_modules()
            if isinstance(module, RecentBatches) and module.mode == "eval"}


def _describe(error: BaseException) -> tuple[str, str]:
    """(node, message) of a calibration error: the node is that of the innermost observer the error came from."""
    node, frame = "<unknown>", error.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        if isinstance(owner, Observer):
            node = owner.node_name
        frame = frame.tb_next
    return node, f"{type(error).__name__}: {first_line(error)}"


def _bad_observer(observers: dict[str, nn.Module]) -> tuple[str, str] | None:
    """An observer whose state holds NaN/Inf (loaded, or a learned scale that diverged), as (node, message)."""
    for observer in observers.values():
        if not observer.has_data:
            continue  # an empty min/max observer holds +-inf by design
        for key, value in observer.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                return observer.node_name, f"its observer state {key!r} holds NaN or Inf"
    return None


def _detached(observer: nn.Module, outside: dict[int, None]) -> nn.Module:
    """A copy of ``observer`` without its references to other observers (a fake quantizer sharing another's
    qparams), which would otherwise be copied and sent along."""
    memo = {key: None for key in outside if key not in {id(m) for m in observer.modules()}}
    return copy.deepcopy(observer, memo)


def _assign(target: nn.Module, source: nn.Module) -> None:
    """Give ``target`` the state of ``source`` (its merged copy) in place, so whatever refers to ``target`` (the
    graph, an optimizer, DistributedDataParallel) sees it: buffers (which may change shape), parameters and
    plain public attributes (such as a moving average's batch count)."""
    for mine, theirs in zip(target.modules(), source.modules(), strict=True):
        mine._buffers.update(theirs._buffers)
        with torch.no_grad():
            for key, value in theirs._parameters.items():
                mine._parameters[key].copy_(value)
        for key, value in vars(theirs).items():
            if not key.startswith("_") and key != "training" and not isinstance(value, (nn.Module, torch.Tensor)):
                setattr(mine, key, value)


def _all_gather(payload: Any, group: Any, timeout: timedelta, me: int, caller: str = "sync_observers",
                error: type[FxqError] = CalibrationError) -> list[Any]:
    """Every rank's ``payload``, in rank order: its pickled length, then the padded bytes, each collective waited
    for at most ``timeout`` (else ``error``, naming the function every rank must call)."""
    data = torch.frombuffer(bytearray(pickle.dumps(payload)), dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size(group))]
    _wait(dist.all_gather(sizes, size, group=group, async_op=True), timeout, me, "sizes", caller, error)
    longest = int(max(sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:data.numel()] = data
    chunks = [torch.empty(longest, dtype=torch.uint8) for _ in sizes]
    _wait(dist.all_gather(chunks, padded, group=group, async_op=True), timeout, me, "their data", caller, error)
    return [pickle.loads(chunk[:int(n)].numpy().tobytes()) for chunk, n in zip(chunks, sizes, strict=True)]


def _wait(work: Any, timeout: timedelta, me: int, what: str, caller: str, error: type[FxqError]) -> None:
    try:
        work.wait(timeout)
    except Exception as cause:  # noqa: BLE001 - gloo raises RuntimeError or DistBackendError, by version
        raise error(f"rank {me}: exchanging {what} with the other ranks failed or timed out after "
                    f"{timeout.total_seconds():g} s: a rank crashed or did not call {caller} "
                    f"({first_line(cause)})") from cause


def _norms(prepared: nn.Module) -> dict[str, FreezableBatchNorm]:
    return {name: m for name, m in prepared.named_modules() if isinstance(m, FreezableBatchNorm)}


def _local_norm_statistics(prepared: nn.Module) -> dict[str, tuple[float, dict[str, torch.Tensor]]]:
    """Each QAT batch norm's (weight, buffers): measured again on this rank's recorded batches (weight: their
    samples) when ``convert`` would do so, else as they are (weight 0: rank 0's are taken)."""
    norms = _norms(prepared)
    recorders = [m for m in prepared.modules() if isinstance(m, RecentBatches)]
    samples = 0.0
    if norms and any(r.pending for r in recorders):
        batches = [b for r in recorders for b in r.batches]
        samples = float(sum(len(b[0]) if isinstance(b[0], torch.Tensor) and b[0].dim() else 1 for b in batches))
        reestimate_bn_stats(prepared)
    return {name: (0.0 if bool(norm.stats_frozen) else samples, dict(norm.named_buffers()))
            for name, norm in norms.items()}


def _combine_norms(prepared: nn.Module, per_rank: list[dict]) -> None:
    """Running mean and variance as the sample-weighted mean over ranks (the weighting ``reestimate_bn_stats``
    gives batches), summed in rank order; rank 0's statistics where nothing was measured again."""
    for name, norm in _norms(prepared).items():
        weights = [stats[name][0] for stats in per_rank]
        states = [stats[name][1] for stats in per_rank]
        combined = dict(states[0])
        if sum(weights) > 0:
            for key in ("running_mean", "running_var"):
                total = sum(w * s[key].double() for w, s in zip(weights, states, strict=True))
                combined[key] = (total / sum(weights)).to(states[0][key].dtype)
            combined["num_batches_tracked"] = sum(s["num_batches_tracked"] for s in states)
        with torch.no_grad():
            for key, value in combined.items():
                getattr(norm, key).copy_(value)
