"""Per-layer precision: the candidates fxq lowers to real CPU kernels, and a plan that gives layers one each.

A precision is a name for what a layer computes in, each backed by a QConfig the pipeline already lowers:

- ``int8``: static int8, calibrated activation ranges and int8 weights (the mapping's global qconfig, else the
  backend's default);
- ``w4a8``: int8 activations and 4-bit weights (symmetric, per channel) held in int8 containers, so the same
  int8 kernels run them: half the weight information for layers that tolerate it, at int8 speed;
- ``int8-dynamic`` (Linear): int8 weights, activations quantized per call from their own range;
- ``fp16`` (Linear): fp16 weights on fbgemm's fp16 kernel, float activations;
- ``float``: not quantized.

A ``PrecisionPlan`` maps module paths to precisions. The ``assign-precision`` pass applies it after
``assign-qconfig`` (``passes/assign_precision.py``); ``PrecisionPlan.to_mapping`` writes the same plan as
QConfigMapping rules, which give the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fxq.errors import ConfigError
from fxq.qconfig import QConfig, get_default_dynamic_qconfig, get_default_qconfig

PRECISIONS = ("int8", "w4a8", "int8-dynamic", "fp16", "float")
LINEAR_ONLY = frozenset({"int8-dynamic", "fp16"})  # CPU kernels exist for Linear (and fused Linear+ReLU) only
LINEAR_CONCEPTS = frozenset({"linear", "linear_relu"})
# the layers a plan names and a search tunes: the ones with weights, where int8 saves the arithmetic
TUNABLE_CONCEPTS = LINEAR_CONCEPTS | frozenset({
    "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d"})


def qconfig_for(precision: str, backend: str, int8: QConfig | None = None) -> QConfig | None:
    """The QConfig that makes a layer compute in ``precision`` on ``backend``; ``int8`` is the static qconfig to
    start from (the mapping's global one), the backend's default if None."""
    check_precision(precision)
    static = int8 if int8 is not None else get_default_qconfig(backend)
    if precision == "int8":
        return static
    if precision == "w4a8":
        from fxq.observers import PerChannelMinMaxObserver

        return QConfig(activation=static.activation,
                       weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=-8,
                                                                 quant_max=7))
    if precision == "int8-dynamic":
        return get_default_dynamic_qconfig(torch.qint8, backend)
    if precision == "fp16":
        return get_default_dynamic_qconfig(torch.float16, backend)
    return None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


@dataclass(frozen=True)
class PrecisionPlan:
    """Module path -> precision, who made the plan ("user", "search", ...: the dump shows it), and why a path
    got its precision where the maker said (``reasons``: the dump adds it to the layer's record).

    Raises:
        ConfigError: an unknown precision, or a path that is not a string.
    """

    assignments: Mapping[str, str] = field(default_factory=dict)
    source: str = "user"
    reasons: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path, precision in self.assignments.items():
            if not isinstance(path, str):
                raise ConfigError(f"a precision plan maps module paths (strings) to precisions; got key {path!r}")
            check_precision(precision)
        object.__setattr__(self, "assignments", dict(self.assignments))
        object.__setattr__(self, "reasons", dict(self.reasons))

    def why(self, path: str) -> str:
        """Who chose ``path``'s precision, and why if the plan says."""
        return f"{self.source}: {self.reasons[path]}" if path in self.reasons else self.source

    def to_mapping(self, mapping, backend: str):
        """A copy of ``mapping`` with one ``set_module_name`` rule per planned module: the plan as rules."""
        from fxq.qconfig_mapping import QConfigMapping

        result = QConfigMapping.from_dict(mapping.to_dict())
        for path, precision in self.assignments.items():
            result.set_module_name(path, qconfig_for(precision, backend, mapping.global_qconfig))
        return result
