"""Patterns as data, and the one matcher every pass uses.

A pattern is a small tree: an op (a concept name such as "conv2d", a module type, a function, a method name
or an aten op; known forms of one concept all match each other) and patterns for the node's leading tensor
inputs. ``Pattern.chain(nn.Conv2d, nn.BatchNorm2d, nn.ReLU)`` reads first-to-last, the way migrating
torch.ao users write fusion patterns. Inner nodes of a match must have a single user unless their pattern says
``multi_user=True``, because rewriting a shared value would change what its other users see.

Matching is anchored at the pattern's last op and visits each node once per rule, so its cost grows linearly
with the graph. A failed match is a value (``NoMatch``) carrying its reason, so passes can record near misses.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from torch import nn
from torch.fx import Graph, Node

from fxq import ops
from fxq.errors import ConfigError


class _Any:
    """Wildcard input: matches any value (node or constant) without constraining it."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()
_PATTERN_FILES = {__file__, __file__.replace("pattern.py", "rewriter.py")}


def definition_site() -> str:
    """file:line of the code that wrote a pattern or rule: the first frame outside fxq's own pattern code."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and filename not in _PATTERN_FILES:
            return f"{filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "unknown"


@dataclass(frozen=True, eq=False)
class Pattern:
    """One op and the patterns of its leading inputs.

    Args:
        op: concept name ("relu"), module type (nn.ReLU), function (F.relu), method name or aten op.
        inputs: patterns (or ANY) for the node's first positional arguments, in order.
        name: capture name; the matched node is passed to the rewrite under this name.
        multi_user: allow this (inner) node to have users outside the match.
    """

    op: object
    inputs: tuple = ()
    name: str | None = None
    multi_user: bool = False
    where: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.where:
            object.__setattr__(self, "where", definition_site())
        key = ops.key_of(self.op)
        known = ops.concept_of_key(key)
        if isinstance(self.op, str) and self.op in ops.known_concepts():
            want = ("concept", self.op)
        elif known:
            want = ("concept", known[0])
        elif isinstance(self.op, str):
            raise ConfigError(f"pattern op {self.op!r} ({self.where}) is neither a known concept nor a known "
                              f"method; known concepts: {', '.join(ops.known_concepts())}")
        else:
            want = key
        object.__setattr__(self, "_want", want)

    @staticmethod
    def chain(*ops_in_order: object, names: Sequence[str | None] | None = None) -> Pattern:
        """A sequence, first op first; each op's first input is the previous op's output."""
        if not ops_in_order:
            raise ConfigError("Pattern.chain needs at least one op")
        names = list(names) if names is not None else [None] * len(ops_in_order)
        where = definition_site()
        pattern = Pattern(ops_in_order[0], (ANY,), names[0], where=where)
        for op, name in zip(ops_in_order[1:], names[1:], strict=True):
            pattern = Pattern(op, (pattern,), name, where=where)
        return pattern

    @staticmethod
    def of(spec: object) -> Pattern:
        """Accept a Pattern, a first-to-last tuple ``(nn.Conv2d, nn.ReLU)``, or torch.ao's older reversed
        nested form ``(nn.ReLU, (nn.BatchNorm2d, nn.Conv2d))``."""
        if isinstance(spec, Pattern):
            return spec
        if isinstance(spec, tuple):
            if len(spec) == 2 and isinstance(spec[1], tuple):
                return _reversed_nested(spec)
            if any(isinstance(item, tuple) for item in spec):
                raise ConfigError(f"cannot read pattern {spec!r}: use a flat first-to-last tuple or a Pattern")
            return Pattern.chain(*spec)
        return Pattern(spec, (ANY,), where=definition_site())

    def describe(self) -> str:
        """Short text for logs: "conv2d -> batch_norm -> relu" for chains, nested otherwise."""
        op = self._want[1] if self._want[0] == "concept" else getattr(self.op, "__name__", str(self.op))
        inner = [p.describe() for p in self.inputs if isinstance(p, Pattern)]
        if len(inner) == 1 and len(self.inputs) == 1:
            return f"{inner[0]} -> {op}"
        return f"{op}({', '.join(inner)})" if inner else str(op)

    def nodes_in_order(self) -> Iterator[Pattern]:
        """Sub-patterns, inputs before the op (the order a chain is written)."""
        for sub in self.inputs:
            if isinstance(sub, Pattern):
                yield from sub.nodes_in_order()
        yield self


def _reversed_nested(spec: object) -> Pattern:
    """torch.ao's older form: (last op, (previous op, (... first op)))."""
    if isinstance(spec, tuple):
        return Pattern(spec[0], (_reversed_nested(spec[1]),))
    return Pattern(spec, (ANY,))


@dataclass
class Match:
    """A successful match: the anchor (last op), captures by name, and every matched node, inputs first.

    ``owned`` are the nodes the match consumes; nodes matched by ``multi_user`` sub-patterns are read, not
    owned, so other matches may read them too.
    """

    pattern: Pattern
    anchor: Node
    captures: dict[str, Node]
    nodes: list[Node]
    owned: list[Node]

    def __bool__(self) -> bool:
        return True


@dataclass
class NoMatch:
    """A failed match and why; ``near`` is True when the anchor op matched but something inside did not."""

    reason: str
    near: bool = False

    def __bool__(self) -> bool:
        return False


_OTHER_OP = NoMatch("another op")


class FormCache:
    """Each node's (form key, concept), computed once per rewrite run: every rule tests the same nodes again, and
    on graphs of thousands of nodes recomputing them dominated lowering time. ``forget`` the nodes a rewrite
    changed."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self._seen: dict[Node, tuple[object, str | None]] = {}

    def lookup(self, node: Node) -> tuple[object, str | None]:
        found = self._seen.get(node)
        if found is None:
            key = ops.form_key(node, self.modules)
            found = self._seen[node] = (key, ops.concept_of(node, self.modules) if key is not None else None)
        return found

    def forget(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            self._seen.pop(node, None)


def op_matches(pattern: Pattern, node: Node, modules: dict[str, nn.Module], cache: FormCache | None = None) -> bool:
    """True if ``node`` computes the op ``pattern`` asks for (any known form of the same concept)."""
    key, concept = (cache or FormCache(modules)).lookup(node)
    if key is None:
        return False
    kind, want = pattern._want
    if kind == "concept":
        return concept == want
    return key == (kind, want)


def match(pattern: Pattern, node: Node, modules: dict[str, nn.Module], *, anchor: bool = True,
          cache: FormCache | None = None) -> Match | NoMatch:
    """Try ``pattern`` with its last op at ``node``."""
    if not op_matches(pattern, node, modules, cache):
        # an anchor that is simply another op is not worth a message: most nodes fail this way
        return NoMatch(f"{node.name} is not {pattern.describe()}") if not anchor else _OTHER_OP
    captures: dict[str, Node] = {}
    nodes: list[Node] = []
    owned: list[Node] = []
    for index, sub in enumerate(pattern.inputs):
        if sub is ANY:
            continue
        if index >= len(node.args) or not isinstance(node.args[index], Node):
            return NoMatch(f"{node.name} has no node input {index} for {sub.describe()}", near=True)
        child = node.args[index]
        found = match(sub, child, modules, anchor=False, cache=cache)
        if not found:
            return NoMatch(found.reason, near=True)
        if len(child.users) > 1 and not sub.multi_user:
            users = ", ".join(sorted(user.name for user in child.users))
            return NoMatch(f"{child.name} has {len(child.users)} users ({users}); fusing would change what the "
                           f"others see", near=True)
        captures.update(found.captures)
        nodes.extend(found.nodes)
        owned.extend(found.owned)
    if pattern.name:
        captures[pattern.name] = node
    nodes.append(node)
    if not pattern.multi_user:
        owned.append(node)
    return Match(pattern, node, captures, nodes, owned)


class AnchorIndex:
    """Nodes by the op they compute, last node first, so that each rule visits only the nodes its anchor op can
    match instead of the whole graph (dozens of lowering rules over thousands of nodes)."""

    def __init__(self, graph: Graph, cache: FormCache) -> None:
        self.cache = cache
        self._by_want: dict[object, list[Node]] = {}
        for node in reversed(graph.nodes):
            self.add(node)

    def add(self, node: Node) -> None:
        """Index ``node`` (a node created after the index was built is visited after the older ones)."""
        key, concept = self.cache.lookup(node)
        if key is None:
            return
        self._by_want.setdefault(key, []).append(node)
        if concept is not None:
            self._by_want.setdefault(("concept", concept), []).append(node)

    def candidates(self, pattern: Pattern) -> list[Node]:
        return [node for node in self._by_want.get(pattern._want, ()) if not node._erased]


def find_matches(graph: Graph, pattern: Pattern, modules: dict[str, nn.Module],
                 claimed: set[Node] | None = None, cache: FormCache | None = None,
                 candidates: Iterable[Node] | None = None) -> Iterator[tuple[Node, Match | NoMatch]]:
    """Match ``pattern`` anchored at every node (or at ``candidates``), last node first, skipping nodes already
    in a match.

    Yields (anchor, result) for successes and near misses; plain non-matches are not reported. The nodes a
    success owns are added to ``claimed`` so that no node is consumed by two matches.
    """
    claimed = set() if claimed is None else claimed
    cache = cache or FormCache(modules)
    for node in reversed(graph.nodes) if candidates is None else candidates:
        if node in claimed or not op_matches(pattern, node, modules, cache):  # most nodes fail the anchor test
            continue
        result = match(pattern, node, modules, cache=cache)
        if result:
            if any(member in claimed for member in result.owned):
                continue
            claimed.update(result.owned)
            yield node, result
        elif result.near:
            yield node, result
