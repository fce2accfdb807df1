"""fxq.distributed.tune on two spawned gloo ranks (loopback): both ranks return the plan one process finds, each
rank did only its share of the work, and an evaluate that fails on one rank, or options that differ between ranks,
raise on both ranks without waiting for a timeout."""

from __future__ import annotations

import pytest
import torch

import fxq
from tests.distributed import workers
from tests.distributed.ranks import equal, run_ranks
from tests.distributed.workers import PROBE, TUNE_OPTIONS, tune_case

DEADLINE_S = 60


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Every tuning scenario's results on each rank."""
    return run_ranks(tmp_path_factory.mktemp("tune_ranks"), list(workers.TUNE_SCENARIOS), DEADLINE_S)


@pytest.fixture(scope="module")
def single_process() -> dict:
    """fxq.tune in this process on the same data and metric, with one thread as the ranks have."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, data, metric = tune_case()
        result = fxq.tune(model, data[0], data, metric, **TUNE_OPTIONS)
        with torch.no_grad():
            output = result.model(*PROBE)
    finally:
        torch.set_num_threads(threads)
    return {"plan": result.plan.assignments, "report": result.report.to_dict(), "output": output}


def test_every_rank_returns_the_plan_one_process_finds(ranks, single_process):
    first, second = (r["tuned"] for r in ranks)
    assert first["plan"] == second["plan"] == single_process["plan"] == {"fc2": "float"}
    assert equal(first["output"], second["output"]) and equal(first["output"], single_process["output"])
    for rank in (first, second):  # every decision comes from the same gathered numbers, timings included
        assert rank["report"] == first["report"]
    sensitivity = {row["path"]: row["sensitivity_db"] for row in first["report"]["layers"]}
    assert sensitivity == {row["path"]: row["sensitivity_db"] for row in single_process["report"]["layers"]}
    assert first["report"]["score"] == single_process["report"]["score"]


def test_the_work_is_shared_between_the_ranks(ranks):
    first, second = (r["tuned"] for r in ranks)
    assert (first["layers_measured"], second["layers_measured"]) == (2, 1)  # fc1 and fc3 on rank 0, fc2 on rank 1
    assert first["evaluate_calls"] and second["evaluate_calls"]
    assert first["evaluate_calls"] + second["evaluate_calls"] == first["report"]["evaluations"]


def test_an_evaluate_failing_on_rank_1_raises_on_both_ranks_naming_it(ranks):
    errors = [r["evaluate_fails_on_rank_1"]["error"] for r in ranks]
    assert errors[0] == errors[1] == "distributed tuning failed on rank 1: RuntimeError: metric server unreachable"


def test_ranks_given_other_options_raise_on_both_instead_of_waiting(ranks):
    errors = [r["options_differ"]["error"] for r in ranks]
    assert errors[0] == errors[1]
    assert errors[0].startswith("rank 1's tuning search went another way than rank 0's")
