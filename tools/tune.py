"""``fxq tune``: the fastest per-layer precision plan within an accuracy budget (``fxq.tune``), from the command
line.

TARGET and the inputs are given as for ``fxq dump`` (``package.module:callable`` returning the float model;
``--input-shape`` or ``--example-inputs``; ``--calibration N`` random batches or a ``.pt`` file with a list of
batches). There is no user metric on the command line: plans are scored by the built-in proxy, the mean output
cosine against the float model on a held-out quarter of the calibration batches. The report is printed;
``--html``, ``--json`` and ``--mapping`` also write it as a page, as JSON, and the chosen plan as QConfigMapping
JSON (``fxq.QConfigMapping.from_json`` loads it; ``fxq.quantize`` with it and the same calibration batches
rebuilds the tuned model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from fxq.tools.dump import add_input_arguments, calibration_batches, example_inputs, load_target
from torch import nn
from torch.fx import GraphModule

from fxq.errors import ConfigError
from fxq.tuning import TuneResult, tune
from fxq.tuning.search import DEFAULT_MAX_DROP, MAX_EVALUATIONS

DEFAULT_CALIBRATION = 8  # random batches when --calibration is not given: 6 calibrate, 2 score the plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="package.module:factory returning the float model")
    add_input_arguments(parser)
    parser.add_argument("--calibration", help=f"number of random calibration batches (default "
                                              f"{DEFAULT_CALIBRATION}), or a .pt file with a list of batches; a "
                                              "quarter is held out to score the plans")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                        help="how far the score may fall below the float model's (default %(default)g: output "
                             "cosine >= 0.99)")
    parser.add_argument("--backend", default="x86", help="reference, x86 or qnnpack")
    parser.add_argument("--max-evaluations", type=int, default=MAX_EVALUATIONS,
                        help="the most plans scored, the float model included (default %(default)d)")
    parser.add_argument("--html", metavar="PATH", help="write the report as a self-contained HTML page")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--mapping", metavar="PATH", help="write the chosen plan as QConfigMapping JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")


@dataclass
class Tuned:
    """What one ``fxq tune`` run used and found."""

    name: str
    model: nn.Module
    example_inputs: tuple
    calibration: list[tuple]
    result: TuneResult


def run(args: argparse.Namespace) -> int:
    tuned = build(args)
    report = tuned.result.report
    print(report)
    if args.html:
        from fxq.tuning.html import tune_html

        _write(args.html, tune_html(report, f"fxq tune: {tuned.name} ({report.backend})"))
    if args.json:
        _write(args.json, json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n")
    if args.mapping:
        _write(args.mapping, tuned.result.mapping.to_json())
    return 0


def build(args: argparse.Namespace) -> Tuned:
    """Load the target and its inputs, and tune it."""
    model = load_target(args.target)
    if isinstance(model, GraphModule) and "fxq_properties" in model.meta:
        raise ConfigError(f"fxq tune {args.target}: this is a model fxq already prepared or quantized; give the "
                          "float model's factory (package.module:callable) as TARGET")
    example = example_inputs(args.input_shape, args.example_inputs, args.input_dtype)
    if example is None:
        raise ConfigError(f"fxq tune {args.target}: give --input-shape (e.g. 1,3,224,224) or --example-inputs "
                          "file.pt so the model can be traced and run")
    calibration = calibration_batches(args.calibration or str(DEFAULT_CALIBRATION), example)
    progress = Progress(sys.stderr, enabled=not args.quiet)
    try:
        result = tune(model, example, calibration, max_drop=args.max_drop, backend=args.backend,
                      max_evaluations=args.max_evaluations, progress=progress)
    finally:
        progress.close()
    return Tuned(type(model).__name__, model, example, calibration, result)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {path} ({len(text):,} characters)", file=sys.stderr)


class Progress:
    """``progress(stage, done, total)`` for ``fxq.tune``. On a terminal: one text bar per stage seen so far, all
    on one line redrawn with ``\\r``; elsewhere (a log, a pipe): one line each time the stage changes."""

    BAR = 20  # characters per bar at most
    STAGES = ("searching", "calibrating", "timing layers")  # what fxq.tune reports, in the order it starts them

    def __init__(self, stream: TextIO, *, enabled: bool = True, tty: bool | None = None) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = stream.isatty() if tty is None else tty
        self.stages: dict[str, tuple[int, int]] = {}  # stage -> (done, total), in the order first seen
        self.last_stage: str | None = None
        self.drawn = 0  # characters of the line now on the terminal
        self.start = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        self.stages[stage] = (done, total)
        if self.tty:
            self._draw()
        elif stage != self.last_stage:
            self.stream.write(f"fxq tune: {stage} {done}/{total}\n")
            self.stream.flush()
        self.last_stage = stage

    def close(self) -> None:
        if not self.enabled or not self.stages:
            return
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"fxq tune: done in {time.perf_counter() - self.start:.1f} s\n")
        self.stream.flush()

    def _draw(self) -> None:
        columns = shutil.get_terminal_size((100, 24)).columns - 1
        texts = [(stage, f" {done}/{total}") for stage, (done, total) in self.stages.items()]
        # sized for every stage tune reports from the first draw, so the bars keep their width as stages appear
        expected = {**{stage: " 40/40" for stage in self.STAGES}, **dict(texts)}
        fixed = sum(len(stage) + len(count) + 4 for stage, count in expected.items())  # "stage [bar] n/m  "
        width = max(3, min(self.BAR, (columns - fixed) // len(expected)))
        parts = []
        for stage, count in texts:
            done, total = self.stages[stage]
            filled = round(width * min(max(done / total, 0.0), 1.0)) if total > 0 else width
            parts.append(f"{stage} [{'#' * filled}{'.' * (width - filled)}]{count}")
        line = "  ".join(parts)[:columns]
        self.stream.write("\r" + line + " " * max(0, self.drawn - len(line)))
        self.stream.flush()
        self.drawn = len(line)
