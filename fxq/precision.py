"""Per-layer precision: the candidates fxq lowers to real CPU kernels (or, int16, simulates on the reference
backend), and a plan that gives layers one each.

A precision is a name for what a layer computes in, each backed by a QConfig the pipeline already lowers:

- ``int8``: static int8, calibrated activation ranges and int8 weights (the mapping's global qconfig, else the
  backend's default);
- ``w4a8``: int8 activations and 4-bit weights (symmetric, per channel) held in int8 containers, so the same
  int8 kernels run them: half the weight information for layers that tolerate it, at int8 speed;
- ``int8-dynamic`` (Linear): int8 weights, activations quantized per call from their own range;
- ``fp16`` (Linear): fp16 weights on fbgemm's fp16 kernel, float activations;
- ``int16`` (W8A16): int8 weights as ``int8`` has them and 16-bit activations, for layers 8-bit activations hurt.
  No CPU kernel in torch runs it, so only the reference backend takes it (simulated: quantize/dequantize to 16
  bits around the float op); a native backend refuses it rather than run something else;
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

PRECISIONS = ("int8", "w4a8", "int8-dynamic", "fp16", "int16", "float")
# no CPU kernel runs these: only a backend without kernels (the reference one) simulates them
SIMULATED_ONLY = frozenset({"int16"})
# 16-bit activation levels, held in torch.qint32 (torch has no qint16); quantizes clamp to them (``lower``)
INT16_RANGE = (-(2**15), 2**15 - 1)
LINEAR_ONLY = frozenset({"int8-dynamic", "fp16"})  # CPU kernels exist for Linear (and fused Linear+ReLU) only
LINEAR_CONCEPTS = frozenset({"linear", "linear_relu"})
# the layers a plan names and a search tunes: the ones with weights, where int8 saves the arithmetic
TUNABLE_CONCEPTS = LINEAR_CONCEPTS | frozenset({
    "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d"})


def qconfig_for(precision: str, backend: str, int8: QConfig | None = None) -> QConfig | None:
    """The QConfig that makes a layer compute in ``precision`` on ``backend``; ``int8`` is the static qconfig to
    start from (the mapping's global one), the backend's default if None. ``int16`` gets its QConfig on any backend;
    the plan (``assign-precision``, ``PrecisionPlan.to_mapping``) refuses it where no kernel runs it."""
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
    if precision == "int16":
        return QConfig(activation=int16_activation(), weight=static.weight)
    return None


def int16_activation():
    """The int16 activation observer factory: min/max, symmetric, levels [-32768, 32767] in a qint32.

    Symmetric (zero point 0) because that is what the kernels that run W8A16 take (TFLite's 16x8 mode requires
    it: a zero point would add cross terms to the 16 x 8-bit products), so the simulation is of something a
    kernel can compute; a one-sided value (after a ReLU) then uses 15 of the 16 bits, still 7 more than int8.
    Min/max rather than a histogram search: with 65,536 levels a step is far finer than what clipping outliers
    could win back, and a 2,048-bin histogram could not even place the range to within one step.
    """
    from fxq.observers import MinMaxObserver

    low, high = INT16_RANGE
    return MinMaxObserver.with_args(dtype=torch.qint32, symmetric=True, quant_min=low, quant_max=high)


def has_kernels(backend: str) -> bool:
    """Whether ``backend`` lowers to CPU kernels (x86, qnnpack) rather than simulating (reference)."""
    from fxq.backends import get_backend

    found = get_backend(backend)
    return found.engine is not None or bool(found.lowering_rules)


def check_kernel(precision: str, backend: str, where: str) -> None:
    """Refuse ``precision`` at ``where`` ("the precision plan gives module 'fc' (linear, node 'fc')") when only a
    simulation runs it and ``backend`` lowers to kernels.

    Raises:
        ConfigError: int16 on x86 or qnnpack, with the fix.
    """
    if precision in SIMULATED_ONLY and has_kernels(backend):
        raise ConfigError(
            f"{where} precision {precision!r} (int8 weights, 16-bit activations), but backend {backend!r} has no "
            f"{precision} kernel: torch's CPU kernels take 8-bit activations only, and fxq does not leave a planned "
            f"layer float silently. Use backend='reference' to simulate {precision} (16-bit quantize/dequantize "
            "around the float op), or give the layer 'float', or 'int8-dynamic' (Linear), for a real CPU kernel")


def decided_by_default(rule: str | None) -> bool:
    """Whether a node's qconfig came from the mapping's global qconfig or a recipe, which a plan overrides (an
    explicit module-name, type or regex rule of the user's wins over it)."""
    return rule in (None, "global") or rule.startswith("recipe(")


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
        """A copy of ``mapping`` with one ``set_module_name`` rule per planned module: the plan as rules.

        Raises:
            ConfigError: a precision no kernel of ``backend`` runs (int16 on x86 or qnnpack), as the plan does.
        """
        from fxq.qconfig_mapping import QConfigMapping

        result = QConfigMapping.from_dict(mapping.to_dict())
        for path, precision in self.assignments.items():
            check_kernel(precision, backend, f"the precision plan gives module {path!r}")
            result.set_module_name(path, qconfig_for(precision, backend, mapping.global_qconfig))
        return result
