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
from fxq.errors import ConfigError
from fxq.shapes import VALUE_KEY

FORMAT, VERSION = "fxq-model", 1
_NODE_KEYS = (META_KEY, VALUE_KEY)


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
        ConfigError: the file was not written by ``fxq.save`` (a plain ``torch.save`` lost the annotations), or
            by a newer fxq.
    """
    payload = torch.load(path, weights_only=False)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise ConfigError(f"{os.fspath(path)!r} was not written by fxq.save (a model saved with torch.save has lost "
                          "fxq's annotations: save it with fxq.save(model, path))")
    if payload["version"] > VERSION:
        raise ConfigError(f"{os.fspath(path)!r} was written by a newer fxq (format version {payload['version']}; "
                          f"this one reads {VERSION}); upgrade fxq")
    gm: GraphModule = payload["module"]
    loaded, saved = list(gm.graph.nodes), payload["nodes"]
    mismatch = next((f"node {i}: saved {op} {target}, loaded {node.op} {_target(node)}"
                     for i, (node, (op, target, _)) in enumerate(zip(loaded, saved, strict=False))
                     if (op, target) != (node.op, _target(node))), None)
    if mismatch or len(loaded) != len(saved):
        raise ConfigError(f"{os.fspath(path)!r}: the loaded graph differs from the saved one "
                          f"({mismatch or f'{len(saved)} nodes saved, {len(loaded)} loaded'}); the file is damaged, "
                          "or this torch re-traces the model differently")
    for node, (_, _, meta) in zip(loaded, saved, strict=True):
        node.meta.update(meta)
    gm.meta.update(payload["meta"])
    return gm


def _target(node) -> str:
    target = node.target
    return target if isinstance(target, str) else f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
