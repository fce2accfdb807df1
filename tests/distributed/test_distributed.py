"""fxq.distributed on two spawned gloo ranks (loopback): synced calibration converts to what one process gets from
all the data, failures on one rank raise on both without hanging, and QAT under DistributedDataParallel converts to
the same model on every rank."""

from __future__ import annotations

import pytest
import torch

from fxq.qat.recent_batches import RecentBatches
from tests.distributed import workers
from tests.distributed.ranks import WORLD, equal, run_ranks
from tests.distributed.workers import (
    ACTIVATIONS,
    CONVERTIBLE,
    converted_state,
    observer_states,
    prepared_model,
    recorders,
    shard,
)

DEADLINE_S = 120


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Every scenario's results on each rank."""
    return run_ranks(tmp_path_factory.mktemp("ranks"), list(workers.SCENARIOS), DEADLINE_S)


def _calibration_sample(prepared) -> RecentBatches:
    [sample] = [m for m in prepared.modules() if isinstance(m, RecentBatches) and m.mode == "eval"]
    return sample


def _single_process(kind: str, stationary: bool = False):
    """One process calibrating on the ranks' shards concatenated in rank order."""
    prepared = prepared_model(kind)
    for rank in range(WORLD):
        for batch in shard(rank, WORLD, stationary):
            prepared(*batch)
    return prepared


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_every_rank_ends_with_the_same_observers_and_model(ranks, kind):
    first, second = (r["calibration"][kind] for r in ranks)
    assert equal(first["observers"], second["observers"])
    if kind in CONVERTIBLE:
        assert equal(first["converted"], second["converted"])


def _split(states: dict) -> tuple[dict, dict]:
    """(observers' states, channel statistics' states)."""
    observers = {name: state for name, state in states.items() if "sum" not in state}
    return observers, {name: state for name, state in states.items() if name not in observers}


def _assert_same_statistics(synced: dict, reference: dict) -> None:
    """Channel statistics: counts, min and max exact; float64 sums added in another order (per rank, then across
    ranks), so equal to the last few bits."""
    assert synced.keys() == reference.keys() and synced
    for name, state in synced.items():
        for key in ("count", "min_val", "max_val"):
            assert torch.equal(state[key], reference[name][key])
        for key in ("sum", "sum_of_squares"):
            torch.testing.assert_close(state[key], reference[name][key], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", ["minmax", "per_channel"])
def test_min_max_calibration_is_bit_identical_to_one_process_on_all_the_data(ranks, kind):
    reference = _single_process(kind)
    synced = ranks[1]["calibration"][kind]
    observers, statistics = _split(synced["observers"])
    expected_observers, expected_statistics = _split(observer_states(reference))
    assert equal(observers, expected_observers)
    _assert_same_statistics(statistics, expected_statistics)
    if kind in CONVERTIBLE:
        assert equal(synced["converted"], converted_state(reference))


@pytest.mark.parametrize("kind", ["default", "histogram"])
def test_histogram_calibration_is_bit_identical_to_one_process_merging_the_shards_in_rank_order(ranks, kind):
    per_rank = []
    for rank in range(WORLD):
        prepared = prepared_model(kind)
        for batch in shard(rank, WORLD):
            prepared(*batch)
        per_rank.append(prepared)
    first, second = (recorders(p) for p in per_rank)
    for name, recorder in first.items():
        recorder.merge(second[name])
    _calibration_sample(per_rank[0]).keep_batches(_calibration_sample(per_rank[1]).batches)  # the last shard's
    synced = ranks[1]["calibration"][kind]
    assert equal(synced["observers"], observer_states(per_rank[0]))
    assert equal(synced["converted"], converted_state(per_rank[0]))


@pytest.mark.parametrize("kind", ["default", "histogram"])
def test_histograms_match_one_process_on_all_the_data_in_range_count_and_model(ranks, kind):
    """The bins differ where rank 1 widened its range (re-binning interpolates; see docs/distributed.md); on this
    data the range search still picks the same qparams, so the converted model is bit-identical."""
    reference = _single_process(kind)
    synced = ranks[0]["calibration"][kind]
    observers, _ = _split(synced["observers"])
    expected, _ = _split(observer_states(reference))
    rebinned = 0
    for name, state in observers.items():
        for key in ("min_val", "max_val"):
            assert torch.equal(state[key], expected[name][key])
        assert state["histogram"].sum().item() == pytest.approx(expected[name]["histogram"].sum().item(), rel=1e-12)
        rebinned += not torch.equal(state["histogram"], expected[name]["histogram"])
    assert rebinned  # the data does widen ranges within rank 1's shard, so this is not the trivial case
    assert equal(synced["converted"], converted_state(reference))


def test_moving_averages_are_the_batch_weighted_mean_within_tolerance(ranks):
    reference = observer_states(_single_process("moving_average", stationary=True))
    synced = ranks[0]["calibration"]["moving_average"]["observers"]
    observers, _ = _split(synced)
    for name, state in observers.items():
        for key in ("min_val", "max_val"):
            width = (reference[name]["max_val"] - reference[name]["min_val"]).item()
            assert abs(state[key] - reference[name][key]).item() <= 0.05 * width, (name, key)


def test_a_rank_that_saw_no_data_takes_the_others_state_exactly(ranks):
    prepared = prepared_model("histogram")
    for batch in shard(0, WORLD):
        prepared(*batch)
    for rank in ranks:
        assert equal(rank["empty_rank"]["observers"], observer_states(prepared))


def test_nan_on_one_rank_makes_every_rank_raise_naming_the_rank_and_node(ranks):
    errors = [r["nan_on_rank_1"]["error"] for r in ranks]
    assert errors[0] == errors[1]
    assert errors[0].startswith("distributed calibration failed on rank 1 at node 'x': CalibrationError")
    assert "NaN" in errors[0]


def test_a_failing_calibration_loop_makes_every_rank_raise(ranks):
    errors = [r["failure_on_rank_0"]["error"] for r in ranks]
    assert errors[0] == errors[1] == ("distributed calibration failed on rank 0 at node '<unknown>': OSError: "
                                      "shard file missing")


def test_qat_under_ddp_converts_to_the_same_model_on_every_rank(ranks):
    first, second = (r["qat_with_ddp"] for r in ranks)
    assert not equal(first["before_sync"], second["before_sync"])  # the ranks did differ before the sync
    assert equal(first["after_sync"], second["after_sync"])
    assert equal(first["converted"], second["converted"])


def test_a_rank_that_never_syncs_makes_the_others_raise_after_the_timeout(ranks):
    error = ranks[0]["silent_rank_1"]["error"]
    assert error.startswith("rank 0: exchanging sizes with the other ranks failed or timed out after 2 s")
