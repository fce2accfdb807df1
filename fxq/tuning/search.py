"""``fxq.tune``: the fastest per-layer precision plan whose score stays within a budget of the float model's.

The search, in metric evaluations (the expensive part; each plan is also quantized and timed):

1. the float model's score (1 evaluation);
2. int8 everywhere, except layers whose int8 form is measurably slower than float in context
   (``fxq.tuning.layer_times``): those stay float, whatever the budget. If this meets the budget, done (2 in all);
3. otherwise rank the layers by the error each adds in int8 by itself (``fxq.tuning.sensitivity``: no
   evaluations), and move the most sensitive first up a ladder: Linear to ``int8-dynamic`` (activation ranges
   per call, still int8 kernels), then to float; convolutions to float. The whole ranking at one rung bounds what
   that rung can do (1 evaluation each, until one meets the budget); a binary search then finds how few of the
   top-ranked layers need it (about log2(layers) evaluations);
4. the layers that search moved are tried back at int8 one by one, least sensitive first, while evaluations
   remain (the ranking is an estimate; the metric decides).

Every plan evaluated is a point of score against latency measured on the example inputs; the result is the
passing plan with the fewest float and the most int8 layers, else the best-scoring one, with by how much it
misses and what could help.

Independent work goes through a ``Spread``: each layer's time and sensitivity, the float model's score with the
first plan's, and the binary search's probes (as many per round as the spread has workers: a (workers + 1)-ary
search). ``fxq.distributed.tune`` shares it among the ranks of a process group; every decision is taken from
the gathered results, so every rank takes the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.annotation import info
from fxq.errors import CalibrationError, ConfigError, FxqError
from fxq.model_inputs import split_call
from fxq.precision import LINEAR_CONCEPTS, PrecisionPlan, decided_by_default, has_kernels
from fxq.qconfig_mapping import QConfigMapping
from fxq.timing import time_interleaved
from fxq.tuning.layer_times import SLOWER_MARGIN, LayerTime, measure_layer_times, tunable_layers
from fxq.tuning.proxy import NAME as PROXY_NAME
from fxq.tuning.proxy import OutputCosine
from fxq.tuning.report import LayerTuning, TunePoint, TuneReport
from fxq.tuning.sensitivity import layer_sensitivity

DEFAULT_MAX_DROP = 0.01
MAX_EVALUATIONS = 40
TUNE_KEY = "fxq_tune"  # the tuned model's meta: its TuneReport
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Spread:
    """Runs the search's independent pieces of work: all in this process here; ``fxq.distributed.tune`` uses one
    that shares them among ranks. ``map`` must return every item's result, the same in every worker."""

    world = 1  # workers: the binary search probes this many plans at once

    def map(self, work: Callable[[list], list], items: Sequence) -> list:
        """``work(items)``, which returns one result per item, in item order (a worker runs its share)."""
        return work(list(items))


@dataclass
class TuneResult:
    """The tuned model, the same plan as QConfigMapping rules (``mapping.to_json()`` saves it), the plan itself
    and the search's report."""

    model: GraphModule
    mapping: QConfigMapping
    plan: PrecisionPlan
    report: TuneReport


def tune(model: nn.Module, example_inputs, calibration_data: Iterable, evaluate: Callable | None = None, *,
         max_drop: float = DEFAULT_MAX_DROP, backend: str = "x86", qconfig_mapping: QConfigMapping | None = None,
         max_evaluations: int = MAX_EVALUATIONS, keep_slow_float: bool = True, runtime: str = "auto",
         progress: Progress | None = None, spread: Spread | None = None, **prepare_options) -> TuneResult:
    """Quantize ``model`` with the fastest per-layer precision plan that keeps ``evaluate`` within ``max_drop``.

    Args:
        evaluate: ``evaluate(model) -> float``, higher is better (accuracy, mean cosine, -loss). None: the
            built-in proxy, the mean cosine of outputs against the float model's on a held-out quarter of
            ``calibration_data`` (the rest calibrates).
        max_drop: how far below the float model's score the result may be (absolute, in the metric's units).
        backend / qconfig_mapping / prepare_options / runtime: as for ``fxq.quantize``. Layers an explicit
            mapping rule names are left as the rule says.
        max_evaluations: the most ``evaluate`` calls to make, the float model's included.
        keep_slow_float: keep float the layers whose int8 form is slower in context (both times reported).
        progress: called as ``progress(stage, done, total)`` as calibration and the search advance.
        spread: who does the independent measurements; None: this process (``fxq.distributed.tune`` passes its
            process group's).
    Returns:
        A ``TuneResult``; when no plan meets the budget it holds the best plan found and says why.
    Raises:
        ConfigError: a bad option; CalibrationError: no calibration data.
    """
    if "precision" in prepare_options:
        raise ConfigError("tune() chooses the precision plan itself; pin layers with qconfig_mapping rules "
                          "(set_module_name) instead of precision=")
    if evaluate is not None and not callable(evaluate):
        raise ConfigError(f"evaluate must be a function model -> score; got {type(evaluate).__name__}")
    if not (isinstance(max_drop, (int, float)) and max_drop >= 0):
        raise ConfigError(f"max_drop must be a number >= 0 (an absolute drop in the metric); got {max_drop!r}")
    if max_evaluations < 2:
        raise ConfigError("max_evaluations must be at least 2 (the float model and one plan)")
    search = _Search(model, example_inputs, list(calibration_data), evaluate, float(max_drop), backend,
                     qconfig_mapping, max_evaluations, progress or _quiet, spread or Spread(), prepare_options)
    return search.run(keep_slow_float, runtime)


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def _positional(batch) -> tuple:
    args, kwargs = split_call(batch)
    if kwargs:
        raise ConfigError("tune() takes example inputs and batches as tuples of positional arguments, not dicts "
                          f"of keyword arguments (got keys {', '.join(kwargs)})")
    return args


@dataclass
class _Trial:
    point: TunePoint
    model: GraphModule | None  # None when another worker built and evaluated it


class _Search:
    def __init__(self, model, example_inputs, batches, evaluate, max_drop, backend, mapping, max_evaluations,
                 progress, spread, prepare_options) -> None:
        from fxq.backends import qconfig_family
        from fxq.qconfig_mapping import get_default_qconfig_mapping

        if not batches:
            raise CalibrationError("tune() got no calibration batches; pass an iterable of representative inputs")
        self.model, self.backend, self.progress, self.spread = model, backend, progress, spread
        self.example_inputs = _positional(example_inputs)
        batches = [_positional(batch) for batch in batches]
        if evaluate is None:
            held = max(1, len(batches) // 4)
            if len(batches) < 2:
                raise ConfigError("tune() without evaluate= holds out a quarter of the calibration batches to "
                                  "score plans on; pass at least 2 batches, or pass evaluate=")
            batches, held_out = batches[:-held], batches[-held:]
            self.metric, self.metric_name = OutputCosine(model, held_out), PROXY_NAME
            self.sensitivity_batches = held_out[:2]
        else:
            self.metric, self.metric_name = evaluate, "evaluate"
            self.sensitivity_batches = batches[:2]
        self.batches = batches
        self.mapping = mapping if mapping is not None else get_default_qconfig_mapping(qconfig_family(backend))
        self.max_drop, self.max_evaluations = max_drop, max_evaluations
        self.prepare_options = prepare_options
        self.evaluations = 0
        self.models: dict[tuple, GraphModule] = {}  # the plans this worker built, by _key
        self.trials: list[_Trial] = []
        self.float_misses = False  # every tunable layer float still misses the budget

    # -- the steps -------------------------------------------------------------------------------------------
    def run(self, keep_slow_float: bool, runtime: str) -> TuneResult:
        self.runtime = runtime
        self.progress("searching", 0, self.max_evaluations)
        prepared, all_int8 = self._build({})
        layers = self._tunable(prepared, all_int8)
        measured = self.spread.map(partial(self._measure, prepared, all_int8), list(layers))
        times = {path: timed for path, (timed, _) in zip(layers, measured, strict=True) if timed is not None}
        sensitivity = {path: own for path, (_, own) in zip(layers, measured, strict=True)}
        slow = {path: times[path] for path in layers if keep_slow_float and has_kernels(self.backend)
                and path in times and times[path].int8_is_slower}  # a simulating backend has no speed to gain
        reasons = {path: f"int8 is slower here ({timed.describe()})" for path, timed in slow.items()}
        self.notes = []
        if slow:
            confirm = partial(self._confirm_faster, all_int8, reasons=reasons)
            [(faster, note)] = self.spread.map(lambda plans: [confirm(plan) for plan in plans],
                                               [{path: "float" for path in slow}])  # one timing decides for all
            self.notes.append(note)
            if not faster:
                slow, reasons = {}, {}
        del prepared, all_int8
        base = {path: "float" for path in slow}
        ranked = sorted((path for path in layers if path not in slow), key=lambda path: sensitivity[path])
        chosen = self._search(base, reasons, ranked, layers)
        for trial in self.trials:
            trial.point = replace(trial.point, chosen=trial is chosen)
        self.spread.map(list, [chosen.point.label])  # the workers end together, on one choice, or learn they differ
        plan = PrecisionPlan({**chosen.point.plan}, "search", reasons)
        model = chosen.model if chosen.model is not None else self._build(chosen.point.plan, reasons)[1]
        report = self._report(chosen, layers, times, sensitivity, plan)
        _attach(model, self.model, self.backend, report)
        return TuneResult(model, plan.to_mapping(self.mapping, self.backend), plan, report)

    def _measure(self, prepared: GraphModule, all_int8: GraphModule, paths: list[str]) -> list[tuple]:
        """(int8 vs float time, or None if it runs no int8 kernel; sensitivity) of each layer in ``paths``."""
        if not paths:
            return []
        self.progress("timing layers", 0, len(paths))
        times = measure_layer_times(prepared, all_int8, self.example_inputs, paths=paths)
        own = layer_sensitivity(prepared, all_int8, self.sensitivity_batches, paths=paths)
        self.progress("timing layers", len(paths), len(paths))
        return [(times.get(path), own.get(path, math.inf)) for path in paths]

    def _confirm_faster(self, all_int8: GraphModule, speed_plan: dict[str, str], reasons: dict) -> tuple[bool, str]:
        """Per-layer times leave out what a whole model adds (the runtime's per-op cost, caches); keep the layers
        they call slower float only if the model with them float is faster than int8 everywhere, too. Returns
        whether it is, and the note saying so with both times."""
        _, planned = self._build(speed_plan, reasons)
        calls = {"int8": self._calling(all_int8), "planned": self._calling(planned)}
        timed = time_interleaved(calls, rounds=15, warmup=2)
        if timed["planned"] * SLOWER_MARGIN >= timed["int8"]:  # not clearly faster: a second look, each at its best
            again = time_interleaved(calls, rounds=15, warmup=2)
            timed = {name: min(seconds, again[name]) for name, seconds in timed.items()}
        both = f"{timed['planned']:.3g} ms with them float vs {timed['int8']:.3g} ms int8 everywhere"
        if timed["planned"] * SLOWER_MARGIN < timed["int8"]:
            return True, f"float where int8 is slower: {both}"
        return False, (f"kept int8 the {len(speed_plan)} layers slower in int8 alone: the whole model is not faster "
                       f"with them float ({both})")

    def _search(self, base: dict, reasons: dict, ranked: list[str], layers: dict[str, str]) -> _Trial:
        label = "int8 where faster" if base else "int8 everywhere"
        [trial] = self._trials([None, (label, base)], reasons, layers)  # and the float model, the baseline
        for rung in self._rungs(ranked, layers):
            if trial.point.meets_budget or not self._can_evaluate():
                break
            top = self._trial(f"top {len(ranked)} at {rung}", _moved(base, ranked, rung, layers), reasons, layers)
            if not top.point.meets_budget:
                self.float_misses = rung == "float"
                continue
            trial = self._fewest(base, reasons, ranked, rung, layers, top)
            trial = self._trim(base, reasons, ranked, layers, trial)
        return self._best()

    def _fewest(self, base, reasons, ranked, rung, layers, passing: _Trial) -> _Trial:
        """The fewest top-ranked layers at ``rung`` that meet the budget (assumes monotony): each round probes
        one count per worker, evenly spaced inside the interval left (one worker: a binary search)."""
        low, high, best = 0, len(ranked), passing
        parts = self.spread.world + 1
        while high - low > 1 and self._can_evaluate():
            counts = sorted({low + (high - low) * k // parts for k in range(1, parts)} - {low})
            counts = counts[:self.max_evaluations - self.evaluations]
            trials = self._trials([(f"top {n} at {rung}", _moved(base, ranked[:n], rung, layers)) for n in counts],
                                  reasons, layers)
            for count, trial in zip(counts, trials, strict=True):
                if trial.point.meets_budget:
                    high, best = count, trial
                    break
                low = count
        return best

    def _trim(self, base, reasons, ranked, layers, passing: _Trial) -> _Trial:
        """Try each moved layer back at int8, least sensitive first, keeping every move the metric allows."""
        moved = [path for path in ranked if path in passing.point.plan and path not in base]
        best = passing
        for path in reversed(moved):
            if not self._can_evaluate():
                break
            plan = {key: value for key, value in best.point.plan.items() if key != path}
            trial = self._trial(f"{path} back to int8", plan, reasons, layers)
            if trial.point.meets_budget:
                best = trial
        return best

    def _rungs(self, ranked: list[str], layers: dict[str, str]) -> list[str]:
        """The ladder's rungs above int8 (``int8-dynamic`` applies to Linears, other layers go float)."""
        dynamic = self.backend != "reference" and any(layers[path] in LINEAR_CONCEPTS for path in ranked)
        return ["int8-dynamic", "float"] if dynamic else ["float"]

    # -- pieces ----------------------------------------------------------------------------------------------
    def _build(self, assignments: dict[str, str], reasons: dict | None = None) -> tuple[GraphModule, GraphModule]:
        from fxq.api import convert, prepare

        plan = PrecisionPlan(assignments, "search", reasons or {})
        prepared = prepare(self.model, self.mapping, self.example_inputs, backend=self.backend, precision=plan,
                           **self.prepare_options)
        with torch.no_grad():
            for index, batch in enumerate(self.batches):
                prepared(*batch)
                self.progress("calibrating", index + 1, len(self.batches))
        return prepared, convert(prepared, runtime=self.runtime)

    def _trial(self, label: str, assignments: dict[str, str], reasons: dict, layers: dict[str, str]) -> _Trial:
        return self._trials([(label, assignments)], reasons, layers)[0]

    def _trials(self, plans: list, reasons: dict, layers: dict[str, str]) -> list[_Trial]:
        """Each of ``plans``, (label, assignments), built, scored and timed, shared out by the spread. A None
        first stands for the float model: its score and time, the baseline of the others, are set here."""
        outcomes = self.spread.map(lambda mine: [self._evaluate(plan, reasons) for plan in mine], plans)
        self.evaluations += len(plans)
        self.progress("searching", self.evaluations, self.max_evaluations)
        trials = []
        for plan, (score, ms) in zip(plans, outcomes, strict=True):
            if plan is None:
                self.float_score, self.float_ms = score, ms
                continue
            label, assignments = plan
            point = TunePoint(label=label, plan=dict(assignments),
                              int8_layers=sum(path not in assignments for path in layers), score=score,
                              latency_ms=ms * self.float_ms, meets_budget=score >= self.float_score - self.max_drop)
            trials.append(_Trial(point, self.models.get(_key(assignments))))
        self.trials += trials
        return trials

    def _evaluate(self, plan: tuple[str, dict[str, str]] | None, reasons: dict) -> tuple[float, float]:
        """The float model's (score, ms per call), or a plan's (score, time relative to the float model's): timed
        against it in the same rounds, so drifts of a busy machine, and another machine's speed, cancel."""
        if plan is None:
            return self._score(self.model), time_interleaved({"float": self._calling(self.model)}, rounds=8,
                                                             warmup=1)["float"]
        _, model = self._build(plan[1], reasons)
        self.models[_key(plan[1])] = model
        score = self._score(model)
        timed = time_interleaved({"model": self._calling(model), "float": self._calling(self.model)}, rounds=8,
                                 warmup=1)
        return score, timed["model"] / timed["float"]

    def _score(self, model: nn.Module) -> float:
        try:
            score = float(self.metric(model))
        except (TypeError, ValueError) as err:
            raise FxqError(f"tune(): evaluate(model) must return a number (higher is better): {err}") from err
        if math.isnan(score):
            raise FxqError("tune(): evaluate(model) returned NaN; the metric must give a number for every model")
        return score

    def _can_evaluate(self) -> bool:
        return self.evaluations < self.max_evaluations

    def _calling(self, model: nn.Module) -> Callable[[], object]:
        return lambda: model(*self.example_inputs)

    def _tunable(self, prepared: GraphModule, converted: GraphModule) -> dict[str, str]:
        """Path -> concept of the layers int8 in ``converted`` that no explicit mapping rule pins."""
        pinned = {path for path, nodes in tunable_layers(prepared).items()
                  if any(not decided_by_default(info(node).qconfig_rule) for node in nodes)}
        return {path: info(nodes[0]).concept for path, nodes in tunable_layers(converted).items()
                if path not in pinned and any(info(node).lowered_to not in (None, "float") for node in nodes)}

    def _best(self) -> _Trial:
        """The passing plan with the fewest float and the most int8 layers (each layer's own times say that is
        faster; whole-model timings of plans a few percent apart are noise on a busy machine), measured latency
        breaking ties; with none passing, the best score."""
        passing = [trial for trial in self.trials if trial.point.meets_budget]
        if passing:
            return min(passing, key=lambda trial: (sum(p == "float" for p in trial.point.plan.values()),
                                                   -trial.point.int8_layers, trial.point.latency_ms))
        return max(self.trials, key=lambda trial: trial.point.score)

    def _report(self, chosen: _Trial, layers, times: dict[str, LayerTime], sensitivity, plan) -> TuneReport:
        rows = []
        for path, concept in layers.items():
            precision = plan.assignments.get(path, "int8")
            timed = times.get(path)
            why = plan.reasons.get(path) or _why(precision, timed, sensitivity[path])
            rows.append(LayerTuning(path, concept, sensitivity[path], timed and timed.int8_ms,
                                    timed and timed.float_ms, precision, why, for_speed=path in plan.reasons))
        report = TuneReport(metric=self.metric_name, float_score=self.float_score, max_drop=self.max_drop,
                            score=chosen.point.score, latency_ms=chosen.point.latency_ms,
                            float_latency_ms=self.float_ms, evaluations=self.evaluations, layers=rows,
                            points=[trial.point for trial in self.trials], backend=self.backend,
                            notes=self.notes)
        if not report.met:
            report.suggestions = _suggestions(self)
        return report


def _why(precision: str, timed: LayerTime | None, sensitivity_db: float) -> str:
    if precision != "int8":
        return f"among the layers that add the most error ({sensitivity_db:.1f} dB alone in int8)"
    if timed is not None and timed.int8_is_slower:
        return "slower in int8 alone, but the whole model is not faster with such layers float (see the notes)"
    return "the search keeps it int8"


def _key(assignments: dict[str, str]) -> tuple:
    return tuple(sorted(assignments.items()))


def _moved(base: dict[str, str], paths: list[str], rung: str, layers: dict[str, str]) -> dict[str, str]:
    """``base`` with ``paths`` moved to ``rung`` (a Linear-only rung moves other layers to float)."""
    return {**base, **{path: rung if rung == "float" or layers[path] in LINEAR_CONCEPTS else "float"
                       for path in paths}}


def _suggestions(search: _Search) -> list[str]:
    tips = []
    if search.evaluations >= search.max_evaluations:
        tips.append(f"The search stopped at max_evaluations={search.max_evaluations}; allow more.")
    if search.float_misses:
        tips.append("Even with every tunable layer float it misses: the error comes from ops a plan does not name "
                    "(matmuls, adds, layer norms); keep those float with qconfig_mapping rules or try another "
                    "recipe (fxq.compare shows the worst layers).")
    tips.append("Quantization-aware training (fxq.prepare_qat) trains the weights to tolerate the rounding instead.")
    return tips


def _attach(quantized: GraphModule, model: nn.Module, backend: str, report: TuneReport) -> None:
    from fxq.report import REPORT_KEY, build_report

    quantized.meta[REPORT_KEY] = build_report(model, quantized, backend)
    quantized.meta[TUNE_KEY] = report
