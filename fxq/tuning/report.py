"""What ``fxq.tune`` found and how: per layer its sensitivity, int8 and float times and the precision chosen
with the reason; every plan it evaluated (the points of the score/latency plot); the budget and whether the
chosen plan meets it, and what to try when it does not."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch


@dataclass(frozen=True)
class LayerTuning:
    """One tunable layer (a module path) of the tuned model."""

    path: str
    concept: str
    sensitivity_db: float  # SQNR of its int8 output given exact inputs (``fxq.tuning.sensitivity``): low is bad
    int8_ms: float | None  # in context, conversions included (``fxq.tuning.layer_times``); None if not timed
    float_ms: float | None
    precision: str
    why: str
    for_speed: bool = False  # float because int8 is slower here (and the whole model confirmed it)


@dataclass(frozen=True)
class TunePoint:
    """One evaluated plan: how many layers it keeps int8, its score and its measured latency."""

    label: str
    plan: dict[str, str]  # path -> precision, for the layers not in int8
    int8_layers: int
    score: float
    latency_ms: float
    meets_budget: bool
    chosen: bool = False


@dataclass
class TuneReport:
    """The search's record; ``str(report)`` prints it, ``to_dict()`` is JSON-ready (the HTML report reads it)."""

    metric: str  # "evaluate" (the user's) or the built-in proxy's name
    float_score: float
    max_drop: float
    score: float  # the chosen plan's
    latency_ms: float  # the chosen plan's, and the float model's below, in the same process
    float_latency_ms: float
    evaluations: int  # calls of the metric, the float model's included
    layers: list[LayerTuning] = field(default_factory=list)
    points: list[TunePoint] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the search found on the way (the whole-model speed check)
    threads: int = field(default_factory=torch.get_num_threads)
    backend: str = "x86"

    @property
    def target(self) -> float:
        return self.float_score - self.max_drop

    @property
    def met(self) -> bool:
        return self.score >= self.target

    @property
    def missed_by(self) -> float:
        """How far below the budget the chosen plan's score is (0 when it meets it)."""
        return max(self.target - self.score, 0.0)

    def counts(self) -> dict[str, int]:
        """Precision -> number of layers."""
        result: dict[str, int] = {}
        for layer in self.layers:
            result[layer.precision] = result.get(layer.precision, 0) + 1
        return result

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(target=self.target, met=self.met, missed_by=self.missed_by, counts=self.counts())
        return _finite(data)

    def __str__(self) -> str:
        from fxq.dump.text import fit_table

        verdict = ("meets the budget" if self.met else
                   f"MISSES the budget by {self.missed_by:.4g}: " + " ".join(self.suggestions))
        counts = ", ".join(f"{n} {p}" for p, n in sorted(self.counts().items()))
        head = (f"metric {self.metric}: float {self.float_score:.5g}, chosen {self.score:.5g} (budget >= "
                f"{self.target:.5g}, max_drop {self.max_drop:g}): {verdict}\n"
                f"latency {self.latency_ms:.3g} ms vs float {self.float_latency_ms:.3g} ms ({self.threads} "
                f"threads, {self.backend}); {self.evaluations} metric evaluations; layers: {counts}")
        layers = fit_table(["layer", "op", "sensitivity dB", "int8 ms", "float ms", "precision", "why"],
                           [[layer.path, layer.concept, f"{layer.sensitivity_db:.1f}", _ms(layer.int8_ms),
                             _ms(layer.float_ms), layer.precision, layer.why] for layer in self.layers], 140)
        points = fit_table(["plan", "int8 layers", "score", "ms", "meets", ""],
                           [[point.label, str(point.int8_layers), f"{point.score:.5g}", f"{point.latency_ms:.3g}",
                             "yes" if point.meets_budget else "no", "chosen" if point.chosen else ""]
                            for point in self.points], 140)
        notes = "".join(f"\n{note}" for note in self.notes)
        return f"{head}{notes}\n\n{layers}\n\n{points}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _finite(value):
    """JSON has no infinities: an exact layer's inf dB becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
