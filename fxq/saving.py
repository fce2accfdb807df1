"""Saving and loading quantized (or prepared) models with what fxq knows about them.

``torch.save`` of a GraphModule keeps its weights and code but not its annotations: unpickling re-traces the
code, which drops every node's ``meta`` and the module's ``meta``. The model still runs, but the dump tool, the
report and ``fxq.compare`` have nothing to read. ``fxq.save`` stores the annotations next to the module in node
order, and ``fxq.load`` puts them back on the re-traced nodes, checking that each is the same op (re-tracing
keeps the order of the nodes, not always their names: ``add_relu_15`` may come back as ``add_relu``).

Loading unpickles Python objects (fxq's modules and records): load only files you trust, as with
``torch.load(..., weights_only=False)``.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch.fx import GraphModule

from fxq.annotation import META_KEY
from fxq.api import RECORDS_KEY
from fxq.converted import ConvertedGraphModule, as_converted
from fxq.errors import ConfigError, LoadError
from fxq.graph_pass import properties_of
from fxq.input_guard import first_sentence, input_records
from fxq.shapes import VALUE_KEY

FORMAT, VERSION = "fxq-model", 1
_NODE_KEYS = (META_KEY, VALUE_KEY)
_PAYLOAD_KEYS = ("module", "nodes", "meta")


def save(gm: GraphModule, path: str | os.PathLike) -> None:
    """Write ``gm`` (what ``fxq.prepare``/``convert``/``quantize`` returned) with its annotations to ``path``."""
    if not isinstance(gm, GraphModule):
        raise ConfigError(f"fxq.save() takes a GraphModule from fxq.prepare/convert/quantize, got {type(gm).__name__}")
    if gm.meta.get("fxq_capture", {}).get("how") == "export":
        raise ConfigError("fxq.save() cannot save a model captured with torch.export yet (its module holds functions "
                          "Python cannot pickle); keep the float model and quantize it again when loading")
    nodes = [(node.op, _target(node), {key: node.meta[key] for key in _NODE_KEYS if key in node.meta})
             for node in gm.graph.nodes]
    meta = dict(gm.meta)
    if RECORDS_KEY in meta:  # per-pass times and counts are kept; graph snapshots are not
        meta[RECORDS_KEY] = [dataclasses.replace(record, snapshot=None) for record in meta[RECORDS_KEY]]
    torch.save({"format": FORMAT, "version": VERSION, "module": gm, "nodes": nodes, "meta": meta}, path)


def load(path: str | os.PathLike) -> GraphModule:
    """The model ``fxq.save`` wrote to ``path``, annotations included.

    Raises:
        LoadError (a ConfigError): no file at ``path``; a file that is damaged (truncated, overwritten) or is not
            an fxq model; one written by plain ``torch.save`` (which lost the annotations) or by a newer fxq. The
            exception ``torch.load`` raised is chained.
    """
    name = os.fspath(path)
    payload = _read(name)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise LoadError(f"{name!r} was not written by fxq.save (a model saved with torch.save has lost fxq's "
                        "annotations: save it with fxq.save(model, path))")
    if payload.get("version", 0) > VERSION:
        raise LoadError(f"{name!r} was written by a newer fxq (format version {payload['version']}; this one reads "
                        f"{VERSION}); upgrade fxq")
    missing = [key for key in _PAYLOAD_KEYS if key not in payload]
    if missing or not isinstance(payload["module"], GraphModule):
        raise LoadError(f"{name!r} is damaged: its fxq payload lacks {missing or ['a GraphModule']}; save the model "
                        "again with fxq.save")
    gm: GraphModule = payload["module"]
    _restore_annotations(name, gm, payload["nodes"])
    gm.meta.update(payload["meta"])
    if "lowered" in properties_of(gm) and not isinstance(gm, ConvertedGraphModule):  # saved before the guard existed
        as_converted(gm, input_records(gm)).recompile()
    return gm


def _read(name: str):
    """``torch.load`` of ``name``, every failure a LoadError naming the file and chaining the cause."""
    try:
        return torch.load(name, weights_only=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:  # (a truncated zip is an OSError too)
        raise LoadError(f"fxq.load cannot read {name!r} ({err.strerror or err}); check the path") from err
    except Exception as err:
        cause = f"{type(err).__name__}: {first_sentence(err)}"
        raise LoadError(f"{name!r} is damaged or is not a file fxq.save wrote: torch.load failed ({cause}); "
                        "save the model again with fxq.save (and check that the copy was complete)") from err


def _restore_annotations(name: str, gm: GraphModule, saved: list) -> None:
    """Put the saved node records back on the re-traced nodes, checking that each is the same op."""
    loaded = list(gm.graph.nodes)
    mismatch = next((f"node {i}: saved {op} {target}, loaded {node.op} {_target(node)}"
                     for i, (node, (op, target, _)) in enumerate(zip(loaded, saved, strict=False))
                     if (op, target) != (node.op, _target(node))), None)
    if mismatch or len(loaded) != len(saved):
        raise LoadError(f"{name!r}: the loaded graph differs from the saved one "
                        f"({mismatch or f'{len(saved)} nodes saved, {len(loaded)} loaded'}); the file is damaged, "
                        "or this torch re-traces the model differently")
    for node, (_, _, meta) in zip(loaded, saved, strict=True):
        node.meta.update(meta)


def _target(node) -> str:
    target = node.target
    return target if isinstance(target, str) else f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
