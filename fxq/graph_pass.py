"""What a pass is: a small named value that transforms a GraphModule and says what it needs and provides.

A pass's options are its dataclass fields; ``requires`` and ``provides`` are property names ("traced",
"fused", "observed", ...) that the pass manager checks before running anything. A pass can run alone on any
GraphModule in a test: ``MyPass().run(gm, PassContext())``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn
from torch.fx import GraphModule

PROPERTIES_KEY = "fxq_properties"


@dataclass
class PassContext:
    """What every pass may read: the pipeline's inputs and a place to report to the user.

    Attributes:
        qconfig_mapping: the user's QConfigMapping (None before qconfig assignment is needed).
        backend: the backend name passes consult ("reference", "x86", ...).
        example_inputs: inputs that run the model, for shape/dtype propagation and numeric checks.
        original: the user's model (read only: passes never touch it), for module-name validation.
        recipe: the ``fxq.recipes.Recipe`` prepare chose (None: none), for passes that follow its adjustments.
        precision_plan: the ``fxq.precision.PrecisionPlan`` given to prepare (None: none), for assign-precision.
        training: the graph is prepared for quantization-aware training (``fxq.prepare_qat``): passes keep what
            training changes (``fuse`` keeps batch norms after convs as norms, in one unit with the conv).
        notes: human-readable lines the entry point reports (what stayed float and why, ...).
        options: free-form extra options for third-party passes.
    """

    qconfig_mapping: Any = None
    backend: str = "reference"
    example_inputs: tuple = ()
    original: nn.Module | None = None
    recipe: Any = None
    precision_plan: Any = None
    training: bool = False
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphPass:
    """Base of every pass. Subclasses set ``name``, ``requires``, ``provides`` and implement ``run``."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        """Transform ``gm`` (in place or by returning a new GraphModule) and return the result."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


def properties_of(gm: GraphModule) -> frozenset[str]:
    """The properties the passes run so far on ``gm`` have provided."""
    return frozenset(gm.meta.get(PROPERTIES_KEY, ()))


def add_properties(gm: GraphModule, provided: frozenset[str]) -> None:
    """Record on ``gm`` that ``provided`` now hold."""
    gm.meta[PROPERTIES_KEY] = sorted(properties_of(gm) | provided)
