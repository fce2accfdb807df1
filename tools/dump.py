"""``fxq dump``: what every node of a model became at a stage of the pipeline, and why.

TARGET is a model factory ``package.module:callable`` (called with no arguments; it returns an ``nn.Module``) or
a file holding a model saved with ``fxq.save`` after ``fxq.prepare`` / ``fxq.convert``. Example inputs come
from ``--input-shape`` (random normal; several inputs separated by ";") or ``--example-inputs file.pt`` (a
tensor or a tuple of tensors); calibration batches from ``--calibration N`` (random, the example's shapes) or
``--calibration file.pt`` (a list of batches).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import os
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import GraphModule

import fxq
from fxq.annotation import copy_graph_module
from fxq.capture import capture
from fxq.dump import compare, inspect
from fxq.dump.diff import diff_graphs
from fxq.dump.json_format import SCHEMA, VERSION, to_json
from fxq.dump.text import render_rows
from fxq.errors import ConfigError, FxqError, first_line
from fxq.graph_pass import PassContext, add_properties
from fxq.shapes import record_values

STAGES = ("traced", "fused", "prepared", "calibrated", "converted")
FORMATS = ("text", "json", "dot", "html")
DEFAULT_CALIBRATION = 2  # random batches when --calibration is not given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", help="package.module:factory, or a model file written by fxq.save")
    add_input_arguments(parser)
    parser.add_argument("--stage", choices=STAGES, default="converted")
    parser.add_argument("--calibration", help="number of random calibration batches, or a .pt file with a list of "
                                              "batches; also the data the per-node error is measured on")
    parser.add_argument("--backend", default="x86", help="reference, x86, qnnpack, or a plugin's backend")
    parser.add_argument("--passes", metavar="SPEC", help="change the pipelines as prepare(passes=...) does, e.g. "
                                                         "'after fuse: my-pass; before lower: other{bits=4}'")
    parser.add_argument("--capture", choices=("fx", "export", "auto"), default="fx",
                        help="how to capture the model: symbolic tracing, torch.export, or tracing else export")
    parser.add_argument("--keep-float", action="append", default=[], metavar="MODULE",
                        help="keep this module float (QConfigMapping.set_module_name(MODULE, None)); repeatable")
    parser.add_argument("--after", metavar="PASS", help="show the graph right after this pass")
    parser.add_argument("--after-all", action="store_true", help="show every pass's graph, what it changed and "
                                                                 "its time")
    parser.add_argument("--compare", action="store_true", help="per-layer error against the float model, worst "
                                                               "first")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--output", help="write here instead of standard output")
    parser.add_argument("--boundaries", action="store_true", help="also list observers and quantize/dequantize")
    parser.add_argument("--width", type=int, default=120, help="text width")
    parser.add_argument("--rules", action="store_true", help="text: also list the passes and rules (file:line) "
                                                              "that made each node, and near misses")
    parser.add_argument("--schema", action="store_true", help="print the JSON format's schema and exit")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The example-input options (``example_inputs`` reads them); ``fxq tune`` takes the same."""
    parser.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 (inputs separated by ';')")
    parser.add_argument("--input-dtype", default="float32",
                        help="dtype of the --input-shape inputs (int64 for token ids: random integers in [0, 100))")
    parser.add_argument("--example-inputs", help="a .pt file with the example input tensor or tuple of tensors")


@dataclass
class Dump:
    """Everything one dump shows: the graph at the chosen point, its rows, the passes, the comparison."""

    model_name: str
    stage: str
    backend: str
    graph: GraphModule
    rows: list
    after_pass: str | None = None
    passes: list[dict] = field(default_factory=list)
    comparison: object = None

    def document(self) -> dict:
        return {"fxq_dump_version": VERSION, "model": self.model_name, "stage": self.stage,
                "after_pass": self.after_pass, "backend": self.backend, "nodes": self.rows, "passes": self.passes,
                "comparison": self.comparison.layers if self.comparison is not None else None}


def run(args: argparse.Namespace) -> int:
    if args.schema:
        import json

        print(json.dumps(SCHEMA, indent=1))
        return 0
    if not args.target:
        raise ConfigError("fxq dump needs a TARGET: package.module:factory, or a saved fxq model file")
    result = build_dump(args)
    text = render(result, args.format, args.width, rules=args.rules)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {args.output} ({len(text):,} characters)", file=sys.stderr)
    else:
        print(text)
    return 0


def render(result: Dump, fmt: str, width: int = 120, rules: bool = False) -> str:
    if fmt == "json":
        return to_json(result.document())
    if fmt == "dot":
        from fxq.dump.dot import to_dot

        return to_dot(result.rows, title=f"{result.model_name} ({result.stage})")
    if fmt == "html":
        from fxq.dump.html import to_html

        return to_html(result.document())
    return _text(result, width, rules)


def _text(result: Dump, width: int, rules: bool) -> str:
    where = f"after pass {result.after_pass!r}" if result.after_pass else f"stage {result.stage}"
    parts = [f"{result.model_name}: {where}, backend {result.backend}"]
    for record in result.passes:
        parts.append(f"\n== after {record['name']} ({record['seconds'] * 1000:.1f} ms, nodes "
                     f"{record['nodes_before']} -> {record['nodes_after']})")
        changes = [f"+ {n}" for n in record["added"]] + [f"- {n}" for n in record["removed"]]
        changes += [f"~ {r['node']}: {', '.join(r['before'])} -> {', '.join(r['after'])}" for r in record["rewired"]]
        parts.append("\n".join(changes) if changes else "(graph unchanged)")
        if "nodes" in record:
            parts.append(render_rows(_op_rows(record["nodes"]), width, rules))
    if not result.passes or result.after_pass:
        parts.append(render_rows(_op_rows(result.rows), width, rules))
    if result.comparison is not None:
        parts.append("\nper-layer error against the float model, worst first:")
        parts.append(str(result.comparison))
    return "\n".join(parts)


def _op_rows(rows: list) -> list:
    return [row for row in rows if row.category not in ("io", "boundary")]


def build_dump(args: argparse.Namespace) -> Dump:
    """Load the target and run the pipeline as far as the options ask."""
    target = load_target(args.target)
    example = example_inputs(args.input_shape, args.example_inputs, getattr(args, "input_dtype", "float32"))
    if isinstance(target, GraphModule) and "fxq_properties" in target.meta:
        return _saved_model_dump(target, args, example)
    model = target
    if example is None:
        raise ConfigError(f"fxq dump {args.target}: give --input-shape (e.g. 1,3,224,224) or --example-inputs "
                          "file.pt so the model can be traced and run")
    stage = "converted" if args.compare or args.after_all else args.stage
    calibration = calibration_batches(args.calibration, example)
    name = type(model).__name__
    if args.after or args.after_all or stage in ("traced", "fused"):
        with _model_errors(f"the example inputs ({_shapes(example)})", "check --input-shape / --example-inputs"):
            traced = capture(copy.deepcopy(model).eval(), example, args.capture).graph_module
        if args.after or args.after_all:
            return _per_pass_dump(model, name, traced, example, calibration, args)
        if stage == "traced":
            return Dump(name, stage, args.backend, traced, _rows(traced, example))
        fused = _fuse(traced, example, args.backend)
        return Dump(name, stage, args.backend, fused, _rows(fused, example))
    mapping = _mapping(args)
    prepared = _prepare(model, mapping, example, args)
    if stage == "prepared":
        return Dump(name, stage, args.backend, prepared, _rows(prepared, example, copy_first=True))
    _calibrate(prepared, calibration)
    if stage == "calibrated":
        return Dump(name, stage, args.backend, prepared, _rows(prepared, example, copy_first=True))
    converted = fxq.convert(prepared, inplace=True, runtime="graph")  # the dump reads the graph; nothing runs fast
    comparison = compare(model, converted, calibration) if (args.compare or args.calibration) else None
    return Dump(name, stage, args.backend, converted, _rows(converted, example, comparison=comparison),
                comparison=comparison)


def _per_pass_dump(model: nn.Module, name: str, traced: GraphModule, example: tuple, calibration: list,
                   args: argparse.Namespace) -> Dump:
    prepared = _prepare(model, _mapping(args), example, args, keep_snapshots=True)
    _calibrate(prepared, calibration)
    prepare_steps = len(fxq.pass_records(prepared))
    converted = fxq.convert(prepared, keep_snapshots=True, runtime="graph")
    records = fxq.pass_records(converted)
    known = [record.name for record in records]
    if args.after and args.after not in known:
        raise ConfigError(f"--after {args.after!r}: the pipeline's passes are {', '.join(known)}")
    passes, before = [], traced
    for index, record in enumerate(records):  # a pass run in prepare and in convert: --after means its first run
        change = diff_graphs(before, record.snapshot)
        entry = {"name": record.name, "seconds": record.seconds, "nodes_before": record.nodes_before,
                 "nodes_after": record.nodes_after, "added": change.added, "removed": change.removed,
                 "rewired": [{"node": n, "before": list(a), "after": list(b)} for n, a, b in change.rewired]}
        if args.after_all:
            entry["nodes"] = inspect(record.snapshot, all_nodes=True)
        passes.append(entry)
        if record.name == args.after:
            stage = "calibrated" if index < prepare_steps else "converted"
            return Dump(name, stage, args.backend, record.snapshot, _rows(record.snapshot, None),
                        after_pass=record.name, passes=[entry])
        before = record.snapshot
    comparison = compare(model, converted, calibration)
    return Dump(name, "converted", args.backend, converted, _rows(converted, example, comparison=comparison),
                passes=passes, comparison=comparison)


def _saved_model_dump(gm: GraphModule, args: argparse.Namespace, example: tuple | None) -> Dump:
    if args.compare:
        raise ConfigError("--compare needs the float model: give its factory (package.module:callable) as TARGET")
    lowered = "lowered" in gm.meta.get("fxq_properties", ())
    stage = "converted" if lowered else "calibrated"
    backend = gm.meta.get("fxq_backend", "?")
    return Dump(os.path.basename(args.target), stage, backend, gm,
                _rows(gm, example, copy_first=not lowered) if example is not None else inspect(gm, all_nodes=True))


def _rows(gm: GraphModule, example: tuple | None, *, copy_first: bool = False, comparison=None) -> list:
    values = None
    if example is not None:  # a prepared graph's observers would record the example: run a copy
        values = record_values(copy_graph_module(gm) if copy_first else gm, example)
    return inspect(gm, all_nodes=True, values=values, comparison=comparison)


def _fuse(traced: GraphModule, example: tuple, backend: str) -> GraphModule:
    gm = copy_graph_module(traced)
    add_properties(gm, frozenset({"traced"}))
    ctx = PassContext(backend=backend, example_inputs=example)
    return fxq.PassManager(["normalize", "fuse"]).run(gm, ctx).graph_module


def _calibrate(prepared: GraphModule, batches: list) -> None:
    with torch.no_grad():
        for index, batch in enumerate(batches):
            with _model_errors(f"calibration batch {index} ({_shapes(batch)})", "batches must fit the model as "
                               "the example inputs do"):
                prepared(*batch)


def _prepare(model: nn.Module, mapping, example: tuple, args: argparse.Namespace, **options) -> GraphModule:
    with _model_errors(f"the example inputs ({_shapes(example)})", "check --input-shape / --example-inputs"):
        return fxq.prepare(model, mapping, example, backend=args.backend, capture=args.capture,
                           passes=args.passes, **options)


@contextlib.contextmanager
def _model_errors(what: str, fix: str):
    """A failure of the model's own code on ``what`` becomes one ConfigError line (fxq's errors pass as they are;
    torch's multi-line reports and their tooling hints are cut to their first line)."""
    try:
        yield
    except FxqError:
        raise
    except Exception as err:  # noqa: BLE001 - the model's code may raise anything
        raise ConfigError(f"the model fails on {what}: {type(err).__name__}: {first_line(err)}; {fix}") from err


def _shapes(values: tuple) -> str:
    return ", ".join("x".join(map(str, value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
                     for value in values)


def _mapping(args: argparse.Namespace):
    """The backend's default mapping, with the modules named by --keep-float left float."""
    mapping = fxq.get_default_qconfig_mapping("x86" if args.backend == "reference" else args.backend)
    for name in args.keep_float:
        mapping = mapping.set_module_name(name, None)
    return mapping


def load_target(target: str):
    """A model from ``package.module:callable`` or a file written by ``fxq.save``."""
    if os.path.exists(target):
        return fxq.load(target)
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ConfigError(f"TARGET {target!r} is neither a file nor package.module:callable")
    if os.getcwd() not in sys.path:  # like ``python -m``: modules in the current directory are found
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot load {target!r}: {err}") from err
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{target!r} returned a {type(model).__name__}, not an nn.Module")
    return model.eval()


def example_inputs(shape_text: str | None, path: str | None, dtype_name: str = "float32") -> tuple | None:
    """Random inputs of the given shapes (normal floats, or integers in [0, 100) for integer dtypes), or the
    tensors saved in ``path``."""
    if path:
        loaded = torch.load(path, weights_only=False)
        inputs = tuple(loaded) if isinstance(loaded, (tuple, list)) else (loaded,)
        if not all(isinstance(value, torch.Tensor) for value in inputs):
            kinds = ", ".join(type(value).__name__ for value in inputs)
            raise ConfigError(f"--example-inputs {path}: expected a tensor or a tuple/list of tensors, got {kinds}")
        return inputs
    if not shape_text:
        return None
    try:
        shapes = [tuple(int(size) for size in part.split(",")) for part in shape_text.split(";")]
    except ValueError:
        raise ConfigError(f"--input-shape {shape_text!r}: write sizes separated by commas, e.g. 1,3,224,224 "
                          "(inputs separated by ';')") from None
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"--input-dtype {dtype_name!r} is not a torch dtype (float32, int64, ...)")
    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return tuple(torch.randn(shape, generator=generator).to(dtype) for shape in shapes)
    return tuple(torch.randint(0, 100, shape, generator=generator, dtype=dtype) for shape in shapes)


def calibration_batches(spec: str | None, example: tuple) -> list[tuple]:
    """``spec`` random batches shaped like ``example``, or the list of batches saved in the file ``spec``."""
    if spec and os.path.exists(spec):
        loaded = torch.load(spec, weights_only=False)
        if isinstance(loaded, torch.Tensor):  # one tensor is one batch, not a list of its rows
            return [(loaded,)]
        return [tuple(batch) if isinstance(batch, (tuple, list)) else (batch,) for batch in loaded]
    try:
        count = int(spec) if spec else DEFAULT_CALIBRATION
    except ValueError:
        raise ConfigError(f"--calibration {spec!r} is neither a number of batches nor a file") from None
    if count < 1:
        raise ConfigError(f"--calibration {spec}: give at least 1 batch (a number of random batches, or a .pt file "
                          "with a list of batches)")
    generator = torch.Generator().manual_seed(1)
    return [tuple(torch.randn(t.shape, generator=generator).to(t.dtype) if t.is_floating_point()
                  else torch.randint(0, 100, t.shape, generator=generator, dtype=t.dtype) for t in example)
            for _ in range(count)]
