"""A backend is a table: which op concepts it can run quantized, how each one's output is observed, and which
dtypes it accepts. Passes consult the table; they never name a backend.

Observation kinds:
- OWN: the op's output gets its own observer and qparams (linear, conv, add, sigmoid, ...).
- SHARED: the output reuses the input's qparams because the op cannot widen the range (maxpool, flatten...).
- NARROWING: the output is observed too, and reuses the input's qparams unless calibration shows it far narrower
  (average pools: a global mean of zero-centred values is a few steps of its input's range); ``lower`` decides.
(There is no "fixed qparams" kind: a bounded op's bound is only an upper limit of its observed range; see the
reference table. A mapping may still give an op a ``FixedQParamsObserver``.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from fxq.errors import ConfigError


class Observation(enum.Enum):
    OWN = "own qparams"
    SHARED = "shares its input's qparams"
    NARROWING = "shares its input's qparams unless its observed output is far narrower"


# A narrowing op (an average pool) shares its input's qparams unless calibration shows its output more than this
# many times narrower. Sharing costs log2(input's scale / own scale) bits of the output's 8; beyond 3 bits (a global
# pool of zero-centred values: 25-50x narrower, 7-11 dB shared) the op gets its own qparams and runs in float
# between a dequantize and a quantize. Post-ReLU features pooled in ResNet-style nets are 1.1-6x narrower: int8.
# ``lower`` decides with it; ``fxq.qat.FakeQuantize`` rounds by it, so training rounds as convert will.
NARROWER = 8.0


@dataclass(frozen=True)
class OpSupport:
    """How a backend runs one concept quantized.

    Attributes:
        concept: the op concept ("linear", "max_pool2d", ...).
        observation: how the output's qparams are found.
        weighted: the op has a weight that lowering quantizes with ``qconfig.weight``.
        weight_arg: for the functional form, which positional argument is the weight.
        activation_dtypes / weight_dtypes: the dtypes the backend's kernel accepts.
        per_tensor_weight: why the kernel needs a per-tensor weight (lowering then quantizes the weight per
            tensor even if the qconfig asks per channel, and records this reason); None if per channel is fine.
        float_output: the kernel can return float straight from its int32 sums. When only float ops read the
            output, it is then not requantized: an int8 output read back as float only adds rounding (and one
            per-tensor scale over outlier channels crushes the others).
    """

    concept: str
    observation: Observation = Observation.OWN
    weighted: bool = False
    weight_arg: int | None = None
    activation_dtypes: frozenset[torch.dtype] = frozenset({torch.quint8, torch.qint8})
    weight_dtypes: frozenset[torch.dtype] = frozenset({torch.qint8})
    per_tensor_weight: str | None = None
    float_output: bool = False


@dataclass(frozen=True)
class Backend:
    """A named table of OpSupport entries, plus the rules that rewrite graphs for it.

    ``lowering_rules`` turn reference patterns into kernels (``lower``); ``fusion_rules`` are tried by ``fuse``
    before its own, so a backend with a fused kernel for a longer pattern claims it first. ``engine`` is the
    ``torch.backends.quantized.engine`` the backend's kernels need (None: no kernels).
    """

    name: str
    ops: Mapping[str, OpSupport]
    lowering_rules: tuple = field(default=())
    engine: str | None = None
    fusion_rules: tuple = field(default=())

    def support(self, concept: str | None) -> OpSupport | None:
        """The entry for ``concept``, or None if this backend has no quantized form of it."""
        return self.ops.get(concept) if concept else None


def check_backend(backend: object) -> None:
    """Refuse a malformed backend with what is wrong in it: its type, name, table entries, rules and engine."""
    from fxq.ops import known_concepts
    from fxq.rewriter import Rule

    if not isinstance(backend, Backend):
        raise ConfigError(f"a backend must be a fxq.backends.Backend, not {type(backend).__name__}")
    what = f"backend {backend.name!r}"
    if not isinstance(backend.name, str) or not backend.name.strip():
        raise ConfigError(f"{what}: its name must be a non-empty string")
    if not isinstance(backend.ops, Mapping):
        raise ConfigError(f"{what}: ops must map op concepts to OpSupport entries (fxq.backends.table.table())")
    concepts = set(known_concepts())
    for key, entry in backend.ops.items():
        if not isinstance(entry, OpSupport):
            raise ConfigError(f"{what}: ops[{key!r}] is a {type(entry).__name__}, not an OpSupport")
        if key != entry.concept:
            raise ConfigError(f"{what}: ops[{key!r}] describes concept {entry.concept!r}; key it by that name")
        if key not in concepts:
            raise ConfigError(f"{what}: {key!r} is not an op concept fxq knows (fxq.ops.known_concepts(); a new "
                              "op needs fxq.ops.register_concept first)")
        if not isinstance(entry.observation, Observation):
            raise ConfigError(f"{what}: ops[{key!r}].observation must be an Observation, not {entry.observation!r}")
        for dtypes in (entry.activation_dtypes, entry.weight_dtypes):
            if not dtypes or not all(isinstance(d, torch.dtype) for d in dtypes):
                raise ConfigError(f"{what}: ops[{key!r}] dtypes must be non-empty sets of torch dtypes")
    for kind in ("lowering_rules", "fusion_rules"):
        rules = getattr(backend, kind)
        if not isinstance(rules, tuple) or not all(isinstance(rule, Rule) for rule in rules):
            raise ConfigError(f"{what}: {kind} must be a tuple of fxq.rewriter.Rule")
    if backend.engine is not None and backend.engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(f"{what}: engine {backend.engine!r} is not one of this torch's quantized engines "
                          f"{torch.backends.quantized.supported_engines}")


def table(entries: Iterable[OpSupport]) -> dict[str, OpSupport]:
    """A concept -> entry dict; a concept listed twice is an error (tables are read, not merged silently)."""
    result: dict[str, OpSupport] = {}
    for entry in entries:
        if entry.concept in result:
            raise ConfigError(f"backend table lists concept {entry.concept!r} twice")
        result[entry.concept] = entry
    return result
