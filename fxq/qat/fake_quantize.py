"""Fake quantization: the forward pass rounds to the int8 grid the converted model will use, the backward pass
lets gradients through as if it had not (straight-through), so training learns weights that survive rounding.

``FakeQuantize`` takes an activation observer's place in the prepared graph. It *is* an ``Observer`` (the one it
wraps decides the range), so every pass and tool that reads observers, ``lower`` above all, reads it unchanged:
the qparams ``convert`` gives a value are the ones training rounded it with. ``WeightFakeQuantize`` rounds a
weight each step with ``fxq.quantize_tensor.quantize_weight``, the very function ``lower`` quantizes it with.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fxq.backends.table import NARROWER
from fxq.observers import Observer
from fxq.qat.initial_scale import least_error_qparams
from fxq.quantize_tensor import quantize_weight

_SETTINGS = ("dtype", "symmetric", "reduce_range", "eps", "quant_min", "quant_max", "custom_range", "node_name",
             "per_channel", "ch_axis")


class FakeQuantize(Observer):
    """Returns the input rounded to an int8 (or narrower) grid while ``fake_quantizing``; passes it through until
    the grid is set (in training mode: evaluating the model never changes it).

    With ``learn_scale`` (the default; per-tensor quantizers only) the scale is a parameter trained with the
    weights (LSQ: the gradient of the loss through the rounding with respect to the step size), so training
    chooses how much of the range to clip. It starts from the first training batch: the observer's range on it,
    narrowed to the least rounding error (``fxq.qat.initial_scale``). ``learn_zero_point`` (with a learned scale
    and an affine scheme; off by default) trains the zero point too, as a float rounded where it is used: for a
    range that training shifts, not just widens. Without it (per-channel quantizers, or
    ``learn_scale=False``) the observer follows every training batch while ``observing`` and the grid is the one
    it implies, as torch.ao's fake quantization does.

    Either way the qparams are kept in the module, so a frozen or learned grid costs nothing to read and the
    converted model uses exactly the last ones. A QConfig may name it directly, ``FakeQuantize.with_args(
    observer=SomeObserver.with_args(...), learn_scale=False)``; ``prepare_qat`` wraps plain observers itself.
    """

    def __init__(self, observer, learn_scale: bool = True, learn_zero_point: bool = False) -> None:
        nn.Module.__init__(self)
        observer = observer if isinstance(observer, Observer) else observer()
        for name in _SETTINGS:
            setattr(self, name, getattr(observer, name))
        self.observer = observer
        self.learn_scale = bool(learn_scale) and not observer.per_channel
        self.register_buffer("observing", torch.tensor(True))
        self.register_buffer("fake_quantizing", torch.tensor(True))
        if self.learn_scale:
            self.scale = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("scale", torch.ones(1))
        self.learn_zero_point = bool(learn_zero_point) and self.learn_scale and not observer.symmetric
        if self.learn_zero_point:
            self.zero_point = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int64))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and bool(self.observing) and not (self.learn_scale and self.has_data):
            self.observer(x, valid)
            if self.observer.has_data:
                self._set_qparams(*(least_error_qparams(self.observer, x, valid) if self.learn_scale
                                    else self.observer.calculate_qparams()))
        if not bool(self.fake_quantizing) or not self.has_data:
            return x
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point.int(), self.ch_axis,
                                                          self.quant_min, self.quant_max)
        scale, zero_point = self.rounding_qparams()
        if scale is self.scale and self.learn_scale:
            grad_factor = 1.0 / math.sqrt(x.numel() * self.quant_max)
            return torch._fake_quantize_learnable_per_tensor_affine(  # |scale|: a step past 0 must not flip it
                x, self.scale.abs(), self.zero_point if self.learn_zero_point else self.zero_point.float(), self.quant_min,
                self.quant_max, grad_factor)
        rounded = torch.fake_quantize_per_tensor_affine(x, scale.detach().float(), _levels(zero_point),
                                                        self.quant_min, self.quant_max)
        if self.learn_scale and self.training:  # rounding with its source's qparams: its own get a zero gradient,
            rounded = rounded + 0.0 * (self.scale.sum() + self.zero_point.sum())  # so DDP sees every parameter used
        return rounded

    def _set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        if self.learn_scale:
            with torch.no_grad():
                self.scale.copy_(scale.reshape(1))
        else:
            self.scale = scale.detach().clone()
        if self.learn_zero_point:
            with torch.no_grad():
                self.zero_point.copy_(zero_point.reshape(1).float())
        else:
            self.zero_point = zero_point.detach().clone()

    def share_unless_narrower(self, source: FakeQuantize) -> None:
        """Round like ``source`` (the input's) unless this output is more than NARROWER times narrower: what
        ``lower`` decides for a narrowing op (an average pool) observed both ways. Kept as a plain reference,
        not a submodule: ``source`` belongs to the graph already."""
        self.__dict__["_source"] = source

    def rounding_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The qparams this value is rounded with: its own, or its source's under ``share_unless_narrower``."""
        source = self.__dict__.get("_source")
        if source is None or not source.has_data:
            return self.scale, self.zero_point
        shared = source.rounding_qparams()
        own = float(self.calculate_qparams()[0])
        return shared if float(shared[0]) / own <= NARROWER else (self.scale, self.zero_point)

    @property
    def has_data(self) -> bool:
        return self.observer.has_data

    @property
    def clamp_to(self) -> tuple[float, float] | None:
        """The wrapped observer's (``observe-clamped``): the dump and ``fxq.compare`` read it here."""
        return self.observer.clamp_to

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.observer.observed_range()

    def seen_range(self):
        return self.observer.seen_range()

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The qparams training last rounded with (what ``lower`` gives the value)."""
        self._require_data()
        zero_point = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).long()
        return self.scale.detach().abs().clamp(min=self.eps).clone(), zero_point.clone()

    def _merge(self, other: FakeQuantize) -> None:
        self.observer.merge(other.observer)
        if not self.learn_scale:  # the rounding follows the merged range, as it follows an observed batch
            self._set_qparams(*self.observer.calculate_qparams())

    def _settings(self) -> dict[str, Any]:
        return {**self.observer._settings(), "observer": type(self.observer).__name__}

    def extra_repr(self) -> str:
        state = [name for name in ("observing", "fake_quantizing") if bool(getattr(self, name))]
        return f"{', '.join(state) or 'frozen, off'}"


def _levels(zero_point: torch.Tensor) -> torch.Tensor:
    """A zero point as the int32 torch's fake quantize takes (a learned one is a float, rounded here)."""
    return zero_point.detach().round().int()


class WeightFakeQuantize(nn.Module):
    """Rounds a weight as ``lower`` will quantize it (the qconfig's weight observer on the current weight, per
    tensor where the backend's kernel needs it), with straight-through gradients."""

    def __init__(self, qconfig, support, node_name: str) -> None:
        super().__init__()
        self.qconfig, self.support, self.node_name = qconfig, support, node_name
        self.register_buffer("fake_quantizing", torch.tensor(True))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not bool(self.fake_quantizing):
            return weight
        rounded = quantize_weight(self.qconfig, self.support, weight.detach(), self.node_name).qweight.dequantize()
        return weight + (rounded - weight).detach()

    def extra_repr(self) -> str:
        return f"weight={self.qconfig.weight!r}, {'on' if bool(self.fake_quantizing) else 'off'}"
