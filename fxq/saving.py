"""Saving and loading what fxq makes (prepared, converted, dynamic and weight-only models, traced or captured
with ``torch.export``), with fxq's records, in a file that loading never runs code from.

``torch.save`` of a model is a pickle: reading it calls whatever functions the file names, so a tampered or
foreign file runs code, and unpickling a GraphModule re-traces its code, which drops every node's record (the
dump tool, the report and ``fxq.compare`` then have nothing to read). ``fxq.save`` writes the model as data
instead (``fxq.module_data``: classes and functions by name, plain attributes, tensors, the graph node by node
with its records) and ``fxq.load`` reads it with ``torch.load(weights_only=True)``, which builds only tensors
and plain containers, then rebuilds the model from names it allows (``fxq.plain_data``).

A model captured with ``torch.export`` calls a guard function torch generated (``_guards_fn``, code that checks
input sizes); it is not saved, and the loaded model relies on fxq's own input checks instead
(``meta["fxq_saved_without"]`` says so).
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn
from torch.fx import GraphModule

from fxq.api import RECORDS_KEY
from fxq.errors import ConfigError, LoadError
from fxq.input_guard import first_sentence
from fxq.module_data import data_to_module, module_to_data
from fxq.plain_data import EncodeError, decode, encode

FORMAT, VERSION = "fxq-model", 2
_SAVED_WITHOUT_KEY = "fxq_saved_without"


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` (from ``fxq.prepare``/``convert``/``quantize``/``quantize_dynamic``) to ``path``.

    Raises:
        ConfigError: ``model`` is not an nn.Module, or holds something that is not data (a hook, a lambda, an
            object of a class outside torch and fxq); the message names the module and attribute.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"fxq.save() takes the model fxq returned (an nn.Module), got {type(model).__name__}")
    guards = frozenset(m for m in model.modules() if type(m).__name__ == "GuardsFn")
    try:
        data = module_to_data(model, skip=guards)
        meta = _meta_to_data(model, dropped=bool(guards))
    except EncodeError as err:
        raise ConfigError(f"fxq.save cannot write this model: {err}") from err
    torch.save({"format": FORMAT, "version": VERSION, "model": data, "meta": meta}, path)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The model ``fxq.save`` wrote to ``path``, with its records. Runs no code from the file.

    Args:
        model: the float model it was quantized from, needed only when the saved model keeps objects that are
            not data (a Hugging Face model's ``config``, after ``quantize_dynamic``): those are taken from it,
            everything else from the file. ``model`` is not changed.

    Raises:
        LoadError (a ConfigError): no file at ``path``; a damaged file (truncated, overwritten); a pickle (written
            by ``torch.save`` or an older fxq, or tampered with: fxq.load never unpickles code); a file from a newer
            fxq; a graph that calls what fxq.load does not allow; a module class whose package is not imported;
            objects to take from ``model`` when it is not given.
    """
    name = os.fspath(path)
    payload = _read(name)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise LoadError(f"{name!r} was not written by fxq.save (save models with fxq.save(model, path))")
    if payload.get("version", 0) > VERSION:
        raise LoadError(f"{name!r} was written by a newer fxq (format version {payload['version']}; this one reads "
                        f"{VERSION}); upgrade fxq")
    missing = [key for key in ("model", "meta") if key not in payload]
    if missing:
        raise LoadError(f"{name!r} is damaged: its fxq payload lacks {missing}; save the model again with fxq.save")
    try:
        loaded = data_to_module(payload["model"], like=model)
        meta = {key: decode(value) for key, value in payload["meta"].items()}
    except LoadError as err:
        raise LoadError(f"{name!r}: {err}") from err
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise LoadError(f"{name!r} is damaged: {type(err).__name__}: {first_sentence(err)}; save the model again "
                        "with fxq.save") from err
    if isinstance(loaded, GraphModule):
        loaded.meta.update(meta)
    return loaded


def _meta_to_data(model: nn.Module, dropped: bool) -> dict:
    """fxq's keys of a GraphModule's meta as data (per-pass records without their graph snapshots)."""
    if not isinstance(model, GraphModule):
        return {}
    meta = {key: value for key, value in model.meta.items() if key.startswith("fxq_")}
    if RECORDS_KEY in meta:
        meta[RECORDS_KEY] = [dataclasses.replace(record, snapshot=None) for record in meta[RECORDS_KEY]]
    if dropped:
        meta[_SAVED_WITHOUT_KEY] = ["torch.export's input guards (_guards_fn): fxq's input checks explain bad inputs"]
    data = {}
    for key, value in meta.items():
        try:
            data[key] = encode(value)
        except EncodeError as err:
            raise EncodeError(f"the model's meta[{key!r}] holds {err}") from err
    return data


def _read(name: str):
    """``torch.load(weights_only=True)`` of ``name``, every failure a LoadError naming the file."""
    try:
        return torch.load(name, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:  # (a truncated zip is an OSError too)
        raise LoadError(f"fxq.load cannot read {name!r} ({err.strerror or err}); check the path") from err
    except Exception as err:
        if "Unsupported global" in str(err):  # weights-only loading met a pickled object (a function to call)
            raise LoadError(f"{name!r} holds pickled objects, whose loading would run code: it was written by "
                            "torch.save or an fxq older than format version 2, or tampered with. fxq.load never "
                            "runs code from a file; if you trust it, read it with torch.load(path, "
                            "weights_only=False) and save that with fxq.save") from err
        cause = f"{type(err).__name__}: {first_sentence(err)}"
        raise LoadError(f"{name!r} is damaged or is not a file fxq.save wrote: torch.load failed ({cause}); "
                        "save the model again with fxq.save (and check that the copy was complete)") from err
