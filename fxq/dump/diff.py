"""What a pass changed in a graph: nodes added, nodes removed, and nodes whose inputs were rewired. Nodes are
identified by name, which passes keep for the nodes they modify in place."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.fx import GraphModule


@dataclass
class GraphDiff:
    """Changes from one graph to the next; ``rewired`` holds (node, inputs before, inputs after)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rewired: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.rewired)

    def lines(self) -> list[str]:
        """One line per change, "+ name", "- name", "~ name: a, b -> c"."""
        result = [f"+ {name}" for name in self.added] + [f"- {name}" for name in self.removed]
        result += [f"~ {name}: {', '.join(old)} -> {', '.join(new)}" for name, old, new in self.rewired]
        return result


def diff_graphs(before: GraphModule, after: GraphModule) -> GraphDiff:
    """The changes that turn ``before``'s graph into ``after``'s, in ``after``'s node order."""
    old = {node.name: tuple(arg.name for arg in node.all_input_nodes) for node in before.graph.nodes}
    new = {node.name: tuple(arg.name for arg in node.all_input_nodes) for node in after.graph.nodes}
    diff = GraphDiff()
    for name, inputs in new.items():
        if name not in old:
            diff.added.append(name)
        elif old[name] != inputs:
            diff.rewired.append((name, old[name], inputs))
    diff.removed = [name for name in old if name not in new]
    return diff
