"""Runs an ordered list of passes: checks their declared order first, lints the graph after each, times each,
and on request keeps a snapshot after each pass (for ``fxq dump --after-all``) or checks that a pass kept the
model's numerics.

A pipeline is an explicit list of pass instances, or a spec string such as ``"normalize,fuse,lower{backend=x86}"``.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Node

from fxq.annotation import copy_graph_module
from fxq.errors import ConfigError, FxqError, PassError, PassOrderError
from fxq.gc_pause import paused_gc
from fxq.graph_pass import GraphPass, PassContext, add_properties, properties_of
from fxq.pass_registry import describe_pass, get_pass


@dataclass
class PassRecord:
    """What one pass did: its name, wall time, node counts before/after and (if kept) the graph after it."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    snapshot: GraphModule | None = None


@dataclass
class PipelineResult:
    """The transformed GraphModule and one record per pass, in order."""

    graph_module: GraphModule
    records: list[PassRecord] = field(default_factory=list)


_SPEC_ITEM = re.compile(r"\s*([A-Za-z0-9_-]+)\s*(?:\{([^}]*)\})?\s*(?:,|$)")


def parse_pipeline(spec: str) -> list[GraphPass]:
    """Build pass instances from ``"name,name{opt=value,opt=value},..."``; values are Python literals or words."""
    passes: list[GraphPass] = []
    position = 0
    spec = spec.strip()
    while position < len(spec):
        found = _SPEC_ITEM.match(spec, position)
        if not found or found.end() == position:
            raise ConfigError(f"cannot parse pipeline spec {spec!r} at position {position}: expected "
                              f"'name' or 'name{{key=value,...}}'")
        name, options = found.group(1), found.group(2)
        passes.append(get_pass(name)(**_parse_options(name, options or "")))
        position = found.end()
    return passes


def _parse_options(name: str, text: str) -> dict[str, object]:
    import ast

    options: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"option {item!r} of pass {name!r} must be key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


class PassManager:
    """An ordered pipeline of passes and the instruments run around each one.

    Args:
        passes: pass instances or names, or a spec string for ``parse_pipeline``.
        keep_snapshots: deep-copy the GraphModule after every pass into its record.
        verify_numerics: after each pass, run the example inputs and compare with the output before it
            (only for passes that declare ``preserves_numerics = True``); raises PassError on a mismatch.
    """

    def __init__(self, passes: Sequence[GraphPass] | str, *, keep_snapshots: bool = False,
                 verify_numerics: bool = False) -> None:
        if isinstance(passes, str):
            self.passes = parse_pipeline(passes)
        else:
            self.passes = [get_pass(p)() if isinstance(p, str) else p for p in passes]
        self.keep_snapshots = keep_snapshots
        self.verify_numerics = verify_numerics

    def validate(self, initial: frozenset[str]) -> None:
        """Check every pass's ``requires`` against what ``initial`` and earlier passes provide, and that no pass
        provides a property the graph has already (two passes claiming to lower, or one run twice)."""
        have = set(initial)
        provider: dict[str, str] = {}
        for index, graph_pass in enumerate(self.passes):
            missing = set(graph_pass.requires) - have
            if missing:
                before = ", ".join(p.name for p in self.passes[:index]) or "nothing"
                providers = _providers(missing)
                raise PassOrderError(
                    f"pass {describe_pass(graph_pass.name)} requires {sorted(missing)} but runs after [{before}] "
                    f"on a graph that has {sorted(have)}; run {providers} before it")
            again = sorted(set(graph_pass.provides) & have)
            if again:
                by = ", ".join(f"{prop!r} by {provider.get(prop, 'an earlier pipeline')}" for prop in again)
                raise PassOrderError(f"pass {describe_pass(graph_pass.name)} provides what the graph has already "
                                     f"({by}); drop one of them from the pipeline")
            have |= graph_pass.provides
            provider.update(dict.fromkeys(graph_pass.provides, describe_pass(graph_pass.name)))

    @paused_gc()
    def run(self, gm: GraphModule, ctx: PassContext | None = None) -> PipelineResult:
        """Run every pass in order on ``gm`` and return the final GraphModule with per-pass records."""
        ctx = ctx or PassContext()
        self.validate(properties_of(gm))
        result = PipelineResult(gm)
        for index, graph_pass in enumerate(self.passes):
            before_nodes = len(gm.graph.nodes)
            reference = self._reference_output(gm, ctx, graph_pass)
            start = time.perf_counter()
            try:
                new_gm = graph_pass.run(gm, ctx)
                new_gm.graph.lint()
            except FxqError:
                raise
            except Exception as err:
                raise _pass_error(graph_pass, self.passes[:index], err) from err
            seconds = time.perf_counter() - start
            add_properties(new_gm, graph_pass.provides)
            gm = new_gm
            if reference is not None:
                gm.recompile()
                self._check_numerics(gm, ctx, graph_pass, reference)
            snapshot = copy_graph_module(gm) if self.keep_snapshots else None
            result.records.append(PassRecord(graph_pass.name, seconds, before_nodes, len(gm.graph.nodes), snapshot))
        gm.recompile()  # once, not after every pass: generating the code of a big graph takes a while
        result.graph_module = gm
        return result

    def _reference_output(self, gm: GraphModule, ctx: PassContext, graph_pass: GraphPass):
        if not (self.verify_numerics and ctx.example_inputs and getattr(graph_pass, "preserves_numerics", False)):
            return None
        with torch.no_grad():
            return copy.deepcopy(gm)(*ctx.example_inputs)

    def _check_numerics(self, gm: GraphModule, ctx: PassContext, graph_pass: GraphPass, reference) -> None:
        with torch.no_grad():
            after = copy.deepcopy(gm)(*ctx.example_inputs)
        flat_ref, flat_after = _flatten(reference), _flatten(after)
        for ref, out in zip(flat_ref, flat_after, strict=True):
            if not torch.allclose(ref, out, rtol=1e-4, atol=1e-4):
                worst = (ref - out).abs().max().item()
                raise PassError(f"pass {graph_pass.name!r} changed the model's output (max abs difference "
                                f"{worst:.3g}) although it declares preserves_numerics; this is a bug in the pass")


def _flatten(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flatten(item)]
    return []


def _providers(missing: set[str]) -> str:
    from fxq.pass_registry import available_passes

    names = [repr(name) for name in available_passes() if set(get_pass(name).provides) & missing]
    return " or ".join(names) if names else "a pass that provides them (no installed pass does)"


def _pass_error(graph_pass: GraphPass, before: Sequence[GraphPass], err: Exception) -> PassError:
    node: Node | None = getattr(err, "fxq_node", None)
    where = f" at node {node.format_node()}" if node is not None else ""
    if getattr(err, "fxq_rule", None):
        where += f" in {err.fxq_rule}"
    earlier = ", ".join(p.name for p in before) or "none"
    return PassError(f"pass {graph_pass.name!r} failed{where} (passes run before it: {earlier}): "
                     f"{type(err).__name__}: {err}")
