"""The pass lists ``prepare`` and ``convert`` run, and the user's changes to them (their ``passes=`` argument).

The default pipelines are data: ``PREPARE`` (plus the recipe's prepare passes, plus ``fake-quantize`` for
QAT) and ``CONVERT`` (after the QAT and recipe convert passes). ``passes=`` changes them in one of two ways:

- insert passes at named points: ``{"after fuse": ["fold-scale"], "before lower": "my-pass{bits=4}"}``, or the
  string ``"after fuse: fold-scale; before lower: my-pass{bits=4}"``. A point names a pass of either pipeline
  (its first run, prepare's first); ``prepare`` keeps convert's points for ``convert``.
- replace a pipeline: ``{"prepare": "normalize,fuse,...", "convert": "lower,cleanup"}``, or for ``prepare`` a
  bare spec (``"normalize,fuse,..."``) or list. A replaced pipeline runs as given: the recipe adds no passes to
  it (its float choices still apply).

Passes are names (built-in, registered, or from the ``fxq.passes`` entry point group), ``name{option=value}``
specs, or ``GraphPass`` instances. Everything is resolved and checked (known names, each pass's ``requires``
met, no property provided twice) before a model is captured.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fxq.errors import ConfigError
from fxq.graph_pass import GraphPass
from fxq.pass_manager import PassManager, parse_pipeline
from fxq.pass_registry import get_pass

PREPARE = ("normalize", "fuse", "name-nodes", "assign-qconfig", "assign-precision", "insert-observers",
           "observe-clamped")
PTQ_PREPARE = ("record-calibration-sample",)  # after PREPARE, post-training only (QAT learns its ranges)
CONVERT = ("sensitivity-ranges", "lower", "cleanup", "name-nodes")
QAT_PREPARE = ("fake-quantize",)  # after the recipe's, in prepare_qat
QAT_CONVERT = ("reestimate-batch-norm", "qat-to-float")  # before the recipe's, converting a QAT model
TRACED = frozenset({"traced"})

_POINT = re.compile(r"^(before|after)\s+([A-Za-z0-9_-]+)$")
Step = tuple[str, dict]  # a pass as data: its name and options (what ``fxq.save`` can keep)


@dataclass(frozen=True)
class PassEdits:
    """``passes=`` parsed: whole pipelines (None: the default) and insertions (where, anchor, steps)."""

    prepare: tuple[Step, ...] | None = None
    convert: tuple[Step, ...] | None = None
    insertions: tuple[tuple[str, str, tuple[Step, ...]], ...] = ()


NO_EDITS = PassEdits()


def parse_passes(value) -> PassEdits:
    """``passes=`` (None, a spec string, a list, a dict, or a PassEdits) as PassEdits; ConfigError if malformed
    or naming an unknown pass."""
    if value is None:
        return NO_EDITS
    if isinstance(value, PassEdits):
        return value
    if isinstance(value, str):
        clauses = [clause.strip() for clause in value.split(";") if clause.strip()]
        if any(":" not in clause for clause in clauses):
            if len(clauses) != 1:
                raise ConfigError(f"passes={value!r}: give one pipeline spec, or clauses 'after PASS: spec; "
                                  "before PASS: spec; prepare: spec; convert: spec' separated by ';'")
            return PassEdits(prepare=_steps(clauses[0]))
        value = dict(clause.split(":", 1) for clause in clauses)
    if isinstance(value, Sequence):
        return PassEdits(prepare=_steps(value))
    if not isinstance(value, Mapping):
        raise ConfigError(f"passes= takes a pipeline spec, a list of passes or a dict such as "
                          f"{{'after fuse': ['my-pass']}}; got {type(value).__name__}")
    whole, insertions = {}, []
    for key, passes in value.items():
        key = " ".join(str(key).split())
        if key in ("prepare", "convert"):
            whole[key] = _steps(passes)
            continue
        point = _POINT.match(key)
        if point is None:
            raise ConfigError(f"passes= key {key!r}: use 'after PASS', 'before PASS', 'prepare' or 'convert'")
        get_pass(point.group(2))  # the anchor must be a pass fxq knows
        insertions.append((point.group(1), point.group(2), _steps(passes)))
    return PassEdits(prepare=whole.get("prepare"), convert=whole.get("convert"), insertions=tuple(insertions))


def _steps(passes) -> tuple[Step, ...]:
    if isinstance(passes, str):
        passes = parse_pipeline(passes)
    elif isinstance(passes, GraphPass) or not isinstance(passes, Sequence):
        passes = [passes]
    steps = []
    for item in passes:
        if isinstance(item, str):
            steps.extend(_steps(item))
        elif isinstance(item, GraphPass):
            steps.append((item.name, _options(item)))
        else:
            raise ConfigError(f"passes=: {item!r} is neither a pass name nor a GraphPass instance")
    return tuple(steps)


def _options(graph_pass: GraphPass) -> dict:
    """The options a pass instance was given: its fields that differ from their defaults."""
    fields = dataclasses.fields(graph_pass) if dataclasses.is_dataclass(graph_pass) else ()
    return {f.name: getattr(graph_pass, f.name) for f in fields
            if f.default is dataclasses.MISSING or getattr(graph_pass, f.name) != f.default}


def _default(names: Sequence[str]) -> list[Step]:
    return [(name, {}) for name in names]


def prepare_steps(edits: PassEdits, recipe, training: bool) -> tuple[list[Step], PassEdits]:
    """The prepare pipeline (the default with the recipe's passes, or the user's) with the insertions whose point
    is in it, and the edits left for ``convert``. ConfigError for a point in neither pipeline."""
    if edits.prepare is not None:
        base = list(edits.prepare)
    else:
        base = _default([*PREPARE, *(() if training else PTQ_PREPARE), *recipe.prepare_passes,
                         *(QAT_PREPARE if training else ())])
    here = tuple(item for item in edits.insertions if item[1] in _names(base))
    later = PassEdits(convert=edits.convert, insertions=tuple(i for i in edits.insertions if i not in here))
    convert_base = _convert_base(later, recipe, training)
    for where, anchor, _ in later.insertions:
        if anchor not in _names(convert_base):
            raise ConfigError(f"passes= '{where} {anchor}': {anchor!r} runs in neither pipeline; prepare runs "
                              f"{', '.join(_names(base))}; convert runs {', '.join(_names(convert_base))}")
    return _insert(base, here), later


def convert_steps(edits: PassEdits, recipe, qat: bool) -> list[Step]:
    """The convert pipeline (QAT and recipe passes, then ``CONVERT``; or the user's) with its insertions."""
    base = _convert_base(edits, recipe, qat)
    for where, anchor, _ in edits.insertions:
        if anchor not in _names(base):
            raise ConfigError(f"passes= '{where} {anchor}': {anchor!r} is not in convert's pipeline "
                              f"({', '.join(_names(base))})")
    return _insert(base, edits.insertions)


def _convert_base(edits: PassEdits, recipe, qat: bool) -> list[Step]:
    if edits.convert is not None:
        return list(edits.convert)
    return _default([*(QAT_CONVERT if qat else ()), *(recipe.convert_passes if recipe else ()), *CONVERT])


def combined(stored: PassEdits, given: PassEdits) -> PassEdits:
    """The edits ``prepare`` kept for convert, then ``convert``'s own (its pipeline wins, insertions add up)."""
    return PassEdits(convert=given.convert if given.convert is not None else stored.convert,
                     insertions=stored.insertions + given.insertions)


def _insert(base: list[Step], insertions) -> list[Step]:
    steps = list(base)
    for where, anchor, extra in insertions:
        index = _names(steps).index(anchor) + (where == "after")  # its first run
        steps[index:index] = extra
    return steps


def instances(steps: list[Step]) -> list[GraphPass]:
    """The pass objects of a pipeline (options checked by each pass's constructor)."""
    made = []
    for name, options in steps:
        try:
            made.append(get_pass(name)(**options))
        except TypeError as err:
            raise ConfigError(f"pass {name!r} does not take options {sorted(options)}: {err}") from err
    return made


def check(steps: list[Step], initial: frozenset[str]) -> frozenset[str]:
    """Validate one pipeline from ``initial`` properties; returns the properties it leaves."""
    passes = instances(steps)
    PassManager(passes).validate(initial)
    return initial.union(*(p.provides for p in passes))


def _names(steps: list[Step]) -> list[str]:
    return [name for name, _ in steps]
