"""What plain 8-bit rounding allows on a fuzzed model: the fuzzer's yardstick for a low SQNR, independent of fxq.

Random graphs can be hopeless for any 8-bit scheme: a tanh of products of tiny products, a normalization of a
value that is constant up to 1e-3, the positive tail of a value whose range is all negative. ``int8_ceiling``
runs the float model with every intermediate float value rounded to 256 levels of its own calibrated min/max
range (zero included, as affine int8 needs) and every weight to 255 levels per output channel (127 on x86,
whose kernels need 7-bit weights on CPUs without VNNI), all in float
(``torch.fx.Interpreter`` over the float model; nothing of fxq's). A model on which even that falls below the
floor is ill-conditioned for int8 and reported as such; below the floor with the ceiling above it is fxq's fault.
The ceiling is the worst over ranges stretched by up to 2%, so that a result that hangs on where a few values round
does not count as reachable.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Interpreter, symbolic_trace

from fxq.metrics import sqnr_db

_OPS = ("call_module", "call_function", "call_method")


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
        zero_point = int(round(-low / scale))
        return torch.fake_quantize_per_tensor_affine(value, scale, zero_point, 0, 255)


# Ranges stretched by up to 2%: an 8-bit result that a change this small moves by many dB depends on luck (which
# side of a rounding boundary a few decisive values fall), so the ceiling is the worst of these.
STRETCHES = (1.0, 1.01, 1.02)


def _round_weights(gm: GraphModule, levels: int) -> None:
    """Every parameter of two or more dimensions to ``2 * levels + 1`` symmetric levels per output channel."""
    with torch.no_grad():
        for parameter in gm.parameters():
            if parameter.dim() >= 2:
                flat = parameter.reshape(parameter.shape[0], -1)
                scale = (flat.abs().amax(1) / levels).clamp_min(1e-12).reshape(-1, *[1] * (parameter.dim() - 1))
                parameter.copy_((parameter / scale).round().clamp(-levels, levels) * scale)


def int8_ceiling(model: torch.nn.Module, calibration: list[tuple], evaluation: tuple,
                 weight_levels: int = 127) -> float | None:
    """The worst output SQNR (dB) of plain 8-bit rounding, or None when no output has signal to measure.

    ``weight_levels``: the largest weight level, 127 for 8-bit weights; 63 where the kernels need 7-bit weights
    (fbgemm on CPUs without VNNI, fxq's x86 default)."""
    import copy

    gm = symbolic_trace(copy.deepcopy(model).eval())
    ranges: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        expected = _flat(gm(*evaluation))
        for batch in calibration:
            _Rounding(gm, ranges, calibrating=True).run(*batch)
        _round_weights(gm, weight_levels)
        scores = [sqnr_db(e, r) for stretch in STRETCHES
                  for e, r in zip(expected, _flat(_Rounding(gm, ranges, False, stretch).run(*evaluation)), strict=True)
                  if e.numel() > 1 and e.std() > 1e-6 * (1 + e.abs().max())]
    return min(scores) if scores else None


def _flat(output) -> list[torch.Tensor]:
    return list(output) if isinstance(output, (tuple, list)) else [output]
