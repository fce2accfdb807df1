"""The dump as JSON, with a versioned, documented schema (``SCHEMA``; ``fxq dump --schema`` prints it and
docs/inspect.md explains it). Consumers should check ``fxq_dump_version``: fields are only added within a
version; a removal or change of meaning bumps it."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

VERSION = 1

_NUMBER_OR_LIST = {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}, {"type": "null"}]}
_DB = {"oneOf": [{"type": "number"}, {"const": "inf"}, {"const": "-inf"}, {"type": "null"}],
       "description": "decibels; \"inf\" means no measurable error; null means not measured"}
_TEXT_OR_NULL = {"type": ["string", "null"]}

_NODE = {
    "type": "object",
    "required": ["name", "kind", "target", "status", "category", "inputs"],
    "properties": {
        "name": {"type": "string", "description": "the node's name in the graph"},
        "kind": {"enum": ["module", "function", "method", "placeholder", "constant", "output"]},
        "target": {"type": "string", "description": "module path, method name or function"},
        "concept": {**_TEXT_OR_NULL, "description": "fxq's name for the op (linear, add, ...)"},
        "fused_group": {**_TEXT_OR_NULL, "description": "names of the nodes fused into this one, joined by +"},
        "qconfig": {**_TEXT_OR_NULL, "description": "the qconfig, summarised"},
        "rule": {**_TEXT_OR_NULL, "description": "the QConfigMapping rule that chose the qconfig"},
        "input_dtypes": {"type": "array", "items": {"type": "string"}},
        "output_dtype": _TEXT_OR_NULL,
        "observed_min": _NUMBER_OR_LIST,
        "observed_max": _NUMBER_OR_LIST,
        "scale": _NUMBER_OR_LIST,
        "zero_point": {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}},
                                 {"type": "null"}]},
        "qdtype": _TEXT_OR_NULL,
        "weight": {**_TEXT_OR_NULL, "description": "the weight's quantization, summarised"},
        "status": {"type": "string", "description": "kernel or op it became, or 'float: <why>'"},
        "sqnr_db": _DB,
        "own_sqnr_db": _DB,
        "origin": {**_TEXT_OR_NULL, "description": "the traced node whose value this node computes"},
        "module_path": {"type": "string", "description": "the module the node came from (\"\" for the root)"},
        "made_by": {"type": "array", "items": {"type": "string"},
                    "description": "passes and rules that created or rewrote the node, oldest first: "
                                   "\"pass:rule (file:line)\""},
        "near_misses": {"type": "array", "items": {"type": "string"},
                        "description": "rules that almost matched here: \"rule: why not\""},
        "inputs": {"type": "array", "items": {"type": "string"}},
        "category": {"enum": ["quantized", "float", "boundary", "io", "pending"]},
    },
}
_PASS = {
    "type": "object",
    "required": ["name", "seconds", "nodes_before", "nodes_after", "added", "removed", "rewired"],
    "properties": {
        "name": {"type": "string"},
        "seconds": {"type": "number"},
        "nodes_before": {"type": "integer"},
        "nodes_after": {"type": "integer"},
        "added": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": "array", "items": {"type": "string"}},
        "rewired": {"type": "array", "items": {
            "type": "object", "required": ["node", "before", "after"],
            "properties": {"node": {"type": "string"},
                           "before": {"type": "array", "items": {"type": "string"}},
                           "after": {"type": "array", "items": {"type": "string"}}}}},
        "nodes": {"type": "array", "items": _NODE, "description": "the graph after this pass (--after-all)"},
    },
}
_LAYER = {
    "type": "object",
    "required": ["origin", "node", "sqnr_db", "own_sqnr_db", "max_abs_error", "cosine"],
    "properties": {
        "origin": {"type": "string"}, "node": {"type": "string"}, "concept": _TEXT_OR_NULL,
        "module_path": {"type": "string"}, "status": {"type": "string"},
        "sqnr_db": _DB, "own_sqnr_db": _DB, "max_abs_error": {"type": "number"}, "cosine": {"type": "number"},
        "worst_channel_sqnr_db": _DB,
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fxq dump",
    "type": "object",
    "required": ["fxq_dump_version", "model", "stage", "backend", "nodes"],
    "properties": {
        "fxq_dump_version": {"const": VERSION},
        "model": {"type": "string", "description": "the model's class or the file it was loaded from"},
        "stage": {"enum": ["traced", "fused", "prepared", "calibrated", "converted"]},
        "after_pass": {**_TEXT_OR_NULL, "description": "the pass whose output is shown (--after)"},
        "backend": {"type": "string"},
        "nodes": {"type": "array", "items": _NODE},
        "passes": {"type": "array", "items": _PASS},
        "comparison": {"oneOf": [{"type": "array", "items": _LAYER}, {"type": "null"}],
                       "description": "per-layer error against the float model, worst first"},
    },
}


def to_json(document: dict[str, Any]) -> str:
    """The document as JSON text (infinities as the strings "inf" / "-inf", which JSON lacks)."""
    return json.dumps(_plain(document), indent=1)


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
