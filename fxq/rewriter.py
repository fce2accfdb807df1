"""The one place graph rewrites happen: rules (pattern + rewrite function) are matched and applied here, and
every node a rule creates or rewrites is stamped with the pass, the rule and where the rule was written.

A rewrite function receives the ``Rewriter`` and the match's captures by name and returns the node that now
computes the anchor's value, or ``Declined("why")`` to leave the graph alone (the reason is recorded on the
anchor, so the dump can say why a near miss did not fire).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info, stamp
from fxq.pattern import AnchorIndex, FormCache, Match, Pattern, definition_site, find_matches


@dataclass(frozen=True)
class Declined:
    """A rewrite's refusal, with the reason shown in dumps."""

    reason: str


@dataclass(frozen=True)
class Rule:
    """One line of a pass's rule table: what to match, what to do with it, and a comment saying why."""

    pattern: Pattern
    rewrite: Callable[..., Node | Declined]
    comment: str = ""
    where: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.where:
            object.__setattr__(self, "where", definition_site())

    @property
    def name(self) -> str:
        return self.rewrite.__name__


def drop_unused_submodules(gm: GraphModule) -> None:
    """Delete the submodules no node calls or reads from (``GraphModule.delete_all_unused_submodules`` does the
    same in time quadratic in the number of modules, which dominated convert on graphs of thousands of nodes)."""
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        parts = node.target.split(".")
        used.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))  # it and its ancestors
        if node.op == "call_module":  # and everything inside it
            used.update(f"{node.target}.{name}" for name, _ in gm.get_submodule(node.target).named_modules()
                        if name)
    for name in [name for name, _ in gm.named_modules() if name and name not in used]:
        gm.delete_submodule(name)


class Rewriter:
    """Applies rules to one GraphModule on behalf of one pass, stamping provenance on what it touches."""

    def __init__(self, gm: GraphModule, pass_name: str) -> None:
        self.gm = gm
        self.pass_name = pass_name
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self._rule: Rule | None = None
        self._index: AnchorIndex | None = None  # while apply() runs: new nodes join it

    def apply(self, rules: Sequence[Rule]) -> dict[str, int]:
        """Match every rule over the graph (earlier rules first) and rewrite; returns rewrites per rule."""
        counts = {rule.name: 0 for rule in rules}
        claimed: set[Node] = set()
        cache = FormCache(self.modules)
        self._index = AnchorIndex(self.gm.graph, cache)
        for rule in rules:
            candidates = self._index.candidates(rule.pattern)
            for anchor, result in list(find_matches(self.gm.graph, rule.pattern, self.modules, claimed, cache,
                                                    candidates)):
                if not result:
                    info(anchor).declined.append((rule.name, result.reason))
                    continue
                if self._apply_one(rule, result):
                    counts[rule.name] += 1
                    cache.forget(result.nodes)
                else:
                    claimed.difference_update(result.owned)
        self._index = None
        self.gm.graph.eliminate_dead_code()
        drop_unused_submodules(self.gm)
        return counts

    def _apply_one(self, rule: Rule, found: Match) -> bool:
        self._rule = rule
        try:
            outcome = rule.rewrite(self, **found.captures)
        except Exception as err:
            if not hasattr(err, "fxq_node"):  # for the pass manager's error: where, and which rule
                err.fxq_node, err.fxq_rule = found.anchor, f"rule {rule.name} ({rule.where})"
            raise
        finally:
            self._rule = None
        if isinstance(outcome, Declined):
            info(found.anchor).declined.append((rule.name, outcome.reason))
            return False
        if outcome is not found.anchor and not found.anchor._erased:
            found.anchor.replace_all_uses_with(outcome)
        return True

    def stamp(self, node: Node) -> Node:
        """Record the current pass and rule on ``node`` and return it."""
        rule = self._rule
        stamp(node, self.pass_name, rule.name if rule else "", rule.where if rule else "")
        return node

    def unique_name(self, stem: str) -> str:
        """A submodule/attribute name not yet used in the GraphModule, derived deterministically from ``stem``."""
        stem = stem.replace(".", "_")
        name, index = stem, 0
        while hasattr(self.gm, name) or name in self.modules:
            index += 1
            name = f"{stem}_{index}"
        return name

    def set_module(self, path: str, module: nn.Module) -> None:
        """Put ``module`` at ``path`` (replacing what was there), keeping the module index current."""
        parent_path, _, leaf = path.rpartition(".")
        parent = self.gm.get_submodule(parent_path) if parent_path else self.gm
        setattr(parent, leaf, module)
        self.modules[path] = module

    def insert(self, op: str, target, args: tuple, kwargs: dict | None = None, *, after: Node | None = None,
               before: Node | None = None, like: Node | None = None) -> Node:
        """Create a stamped node next to ``after`` or ``before``; ``like`` lends its module scope."""
        graph = self.gm.graph
        point = graph.inserting_after(after) if after is not None else graph.inserting_before(before)
        with point:
            node = graph.create_node(op, target, args, kwargs or {})
        if like is not None:
            record, source = info(node), info(like)
            record.module_path, record.module_type = source.module_path, source.module_type
            if "nn_module_stack" in like.meta:
                node.meta["nn_module_stack"] = like.meta["nn_module_stack"]
        if self._index is not None:
            self._index.add(node)
        return self.stamp(node)

    def release_attribute(self, node: Node) -> None:
        """Erase a ``get_attr`` node nothing uses any more, and its tensor if nothing else reads it."""
        if node.op == "get_attr" and not node.users:
            self.gm.graph.erase_node(node)
            self.drop_unread_attributes({node.target})

    def drop_unread_attributes(self, targets: Iterable[str]) -> None:
        """Delete the tensors at ``targets`` that no ``get_attr`` node reads and no called module owns (it would
        read them itself): a float weight replaced by its int8 copy must not stay in the model."""
        read = {node.target for node in self.gm.graph.nodes if node.op == "get_attr"}
        called = {node.target for node in self.gm.graph.nodes if node.op == "call_module"}
        for target in set(targets) - read:
            owner_path, _, leaf = target.rpartition(".")
            if any(owner_path == path or owner_path.startswith(path + ".") for path in called):
                continue
            try:
                owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
            except AttributeError:
                continue  # its module went already, as an unused submodule
            if hasattr(owner, leaf):
                delattr(owner, leaf)

    def erase(self, nodes: Iterable[Node]) -> None:
        """Erase nodes that no longer have users, last first."""
        for node in reversed(list(nodes)):
            if not node.users:
                self.gm.graph.erase_node(node)
