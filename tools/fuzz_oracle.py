"""What plain 8-bit rounding allows on a fuzzed model: the fuzzer's yardstick for a low SQNR, independent of fxq.

Random graphs can be hopeless for any 8-bit scheme: a tanh of products of tiny products, a normalization of a
value that is constant up to 1e-3, the positive tail of a value whose range is all negative. ``int8_ceiling``
runs the float model with every float value, the graph's inputs and every intermediate, rounded to 256 levels
of its own calibrated min/max range (zero included, as affine int8 needs) and every weight to 255 levels per
output channel (127 on x86, whose kernels need 7-bit weights on CPUs without VNNI), all in float
(``torch.fx.Interpreter`` over the float model; nothing of fxq's). A result below the floor is fxq's fault
when this ceiling is more than 3 dB above it; otherwise, or when the ceiling itself is below 0 dB (more noise than
signal), the model is ill-conditioned for int8 and reported as such (``fxq.tools.fuzz``).
(The inputs are rounded because fxq must quantize an input that an int8 op reads: an evaluation input beyond the
calibrated range is clipped by any 8-bit scheme. Seed 3751, whose evaluation batch holds an input 1.66x past
the calibrated maximum: fxq 12.4 dB, the ceiling 17.4 dB with the inputs left unrounded and 11.7 dB rounded.)

The ceiling is the worst over ranges within 2% of the calibrated ones, narrower as well as wider, for the
activations alone and for activations and weights together. Any of these is as good an 8-bit rounding as the
exact min/max (a calibration set one batch smaller moves ranges that much), so a result that changes by many dB
between them hangs on which side of a rounding boundary a few decisive values fall, and fxq's own rounding is
just another draw. Measured on fuzzed models: a group norm over one non-zero value of two steps (its variance
below eps) fell from 18.4 to 6.5 dB with 62 instead of 63 weight levels, and fxq's own result from 14.7 to 6.8 dB
when calibrated without its first batch; a softmax of logits one step apart flipped between 13 and 22 dB with
ranges 0.25% apart. Models whose ceiling holds steady keep it: a clipped product (20 dB over every variant) and a
pooled mean (24-29 dB) are still failures when fxq falls below them.

``float32_precision`` is the yardstick's own yardstick: the float32 model against itself in float64. A layer
norm of ``(1.5 - v) + v`` normalizes float32's rounding noise into the output (measured: float32 against float64
far below the floor), and every 8-bit scheme, fxq's or the ceiling's, is then compared with noise.
"""

from __future__ import annotations

import copy

import torch
from torch.fx import GraphModule, Interpreter, symbolic_trace

from fxq.metrics import sqnr_db

_OPS = ("placeholder", "call_module", "call_function", "call_method")


class _Rounding(Interpreter):
    """Records each op's output range (calibrating) or rounds each op's output to 8 bits of that range."""

    def __init__(self, gm: GraphModule, ranges: dict[str, tuple[float, float]], calibrating: bool,
                 stretch: float = 1.0) -> None:
        super().__init__(gm)
        self.ranges, self.calibrating, self.stretch = ranges, calibrating, stretch

    def run_node(self, n):
        value = super().run_node(n)
        if n.op not in _OPS or not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            return value
        if self.calibrating:
            low, high = self.ranges.get(n.name, (0.0, 0.0))
            self.ranges[n.name] = (min(low, float(value.min())), max(high, float(value.max())))
            return value
        low, high = self.ranges.get(n.name, (0.0, 0.0))
        scale = max(self.stretch * (high - low) / 255, 1e-12)
        zero_point = min(max(int(round(-low / scale)), 0), 255)  # a narrower range clips at one end
        return torch.fake_quantize_per_tensor_affine(value, scale, zero_point, 0, 255)


# Ranges scaled by up to 2% either way: an 8-bit result that a change this small moves by many dB depends on luck
# (which side of a rounding boundary a few decisive values fall), so the ceiling is the worst of these.
STRETCHES = (0.98, 0.99, 1.0, 1.01, 1.02)
# (activation stretch, weight stretch): activations alone, then activations and weights together
VARIANTS = tuple((s, 1.0) for s in STRETCHES) + tuple((s, s) for s in STRETCHES if s != 1.0)


def _round_weights(gm: GraphModule, levels: int, stretch: float = 1.0) -> None:
    """Every parameter of two or more dimensions to ``2 * levels + 1`` symmetric levels per output channel, over
    its largest magnitude times ``stretch`` (below 1 the largest weights clip)."""
    with torch.no_grad():
        for parameter in gm.parameters():
            if parameter.dim() >= 2:
                flat = parameter.reshape(parameter.shape[0], -1)
                scale = (stretch * flat.abs().amax(1) / levels).clamp_min(1e-12)
                scale = scale.reshape(-1, *[1] * (parameter.dim() - 1))
                parameter.copy_((parameter / scale).round().clamp(-levels, levels) * scale)


def int8_ceiling(model: torch.nn.Module, calibration: list[tuple], evaluation: tuple,
                 weight_levels: int = 127) -> float | None:
    """The worst output SQNR (dB) of plain 8-bit rounding, or None when no output has signal to measure.

    ``weight_levels``: the largest weight level, 127 for 8-bit weights; 63 where the kernels need 7-bit weights
    (fbgemm on CPUs without VNNI, fxq's x86 default)."""
    traced = symbolic_trace(copy.deepcopy(model).eval())
    ranges: dict[str, tuple[float, float]] = {}
    scores = []
    with torch.no_grad():
        expected = _flat(traced(*evaluation))
        for batch in calibration:
            _Rounding(traced, ranges, calibrating=True).run(*batch)
        for stretch, weight_stretch in VARIANTS:
            gm = copy.deepcopy(traced)
            _round_weights(gm, weight_levels, weight_stretch)
            rounded = _flat(_Rounding(gm, ranges, False, stretch).run(*evaluation))
            scores += [sqnr_db(e, r) for e, r in zip(expected, rounded, strict=True)
                       if e.numel() > 1 and e.std() > 1e-6 * (1 + e.abs().max())]
    return min(scores) if scores else None


def float32_precision(model: torch.nn.Module, evaluation: tuple) -> float | None:
    """The worst output SQNR (dB) of the float32 model against the same model in float64, or None when the
    model does not run in float64. Low when the float program amplifies float32's own rounding (a layer norm of
    a difference of near-equal values): then the float32 output is itself mostly noise, and no SQNR against it
    says anything about quantization."""
    try:
        with torch.no_grad():
            exact = _flat(copy.deepcopy(model).double()(*[_double(v) for v in evaluation]))
            single = _flat(model(*evaluation))
    except (RuntimeError, TypeError):
        return None
    scores = [sqnr_db(e, s.double()) for e, s in zip(exact, single, strict=True)
              if torch.is_tensor(s) and s.is_floating_point() and e.numel() > 1 and float(e.std()) > 0]
    return min(scores) if scores else None


def _double(value):
    return value.double() if torch.is_tensor(value) and value.is_floating_point() else value


def _flat(output) -> list[torch.Tensor]:
    return list(output) if isinstance(output, (tuple, list)) else [output]
