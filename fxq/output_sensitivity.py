"""What rounding an observed value costs at the model's output, measured on calibration batches.

A histogram observer chooses a value's range by the value's own squared error, which counts every value alike.
The model's output does not: a value squared downstream (``x * x``, ``elu(x) * x``) or fed to an exponential
turns the error of its largest values into the largest output error, so a tail that was cheap to clip for the
value is expensive for the model (fuzz seed 2909: 13.9 dB where plain rounding of every value reaches 19.9).

To first order, rounding errors ``d`` in a value move the outputs by ``J d``. Over random output directions
``r``, E[(r . J d)^2] = sum_k d_k^2 (J^T J)_kk, and one backward pass of ``r . y`` gives ``g = J^T r`` with
E[g_k^2] = (J^T J)_kk. So ``g_k^2`` is what an error at position k costs at the output. Each output is scaled by
its own norm first, so that each output's relative error counts alike (a model's second output may be 100x
smaller than its first). The probe directions come from a seeded generator: the same batches give the same
weights, and the global random state is left alone.

``output_weights`` fits, per observer, E[g^2 | x] as a quadratic in x (least squares over every replayed value:
the cost of a value squared downstream grows as x^2, one passed on linearly stays flat) and returns it at the
centre of each bin of the observer's histogram. Calibration saw more batches than were kept, and its extremes
are rare; a fit over all replayed values still says what they cost where few or none were replayed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.fx import GraphModule, Interpreter

from fxq.observers import Observer
from fxq.observers.histogram_base import HistogramCollector
from fxq.qat.recent_batches import RecentBatches
from fxq.statistics import ChannelStatistics

SEED = 0


def output_weights(gm: GraphModule, observers: dict[str, HistogramCollector],
                   batches: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """For each of ``observers`` (name in ``gm`` -> observer with a histogram) that the batches reach through a
    differentiable path to a float output: the fitted cost of an error at the centre of each of its histogram's
    bins (float64, one per bin). Runs ``gm`` in float, observers and recorders passing values through untouched;
    nothing in ``gm`` or its observers changes."""
    sums = {name: torch.zeros(3, dtype=torch.float64) for name in observers}
    counts = {name: torch.zeros(5, dtype=torch.float64) for name in observers}
    generator = torch.Generator().manual_seed(SEED)
    for batch in batches:
        with torch.inference_mode(False), torch.enable_grad():
            replay = _Replay(gm, set(observers))
            outputs = [y for y in pytree.tree_leaves(_as_tree(replay.run(*_leaves_requiring_grad(batch))))
                       if isinstance(y, torch.Tensor) and y.requires_grad]
            seen = [(name, x, valid) for name, x, valid in replay.seen if x.requires_grad]
            if not outputs or not seen:
                continue
            probe = sum((torch.randn(y.shape, generator=generator, dtype=y.dtype) * y).sum()
                        / y.detach().norm().clamp_min(torch.finfo(y.dtype).tiny) for y in outputs)
            grads = torch.autograd.grad(probe, [x for _, x, _ in seen], allow_unused=True)
        for (name, x, valid), grad in zip(seen, grads, strict=True):
            if grad is not None:
                _accumulate(observers[name], x.detach(), grad, valid, sums[name], counts[name])
    fitted = [name for name in observers
              if counts[name][0] > 0 and sums[name][0] > 0 and torch.isfinite(sums[name]).all()]
    if not fitted:
        return {}
    normal = torch.stack([torch.stack([counts[name][i:i + 3] for i in range(3)]) for name in fitted])
    targets = torch.stack([sums[name] for name in fitted])
    coefficients = torch.linalg.lstsq(normal, targets.unsqueeze(-1)).solution.squeeze(-1)  # all fits in one call
    return {name: _per_bin(observers[name], c.numpy(), float(sums[name][0] / counts[name][0]))
            for name, c in zip(fitted, coefficients, strict=True)}


class _Replay(Interpreter):
    """Runs the observed graph in float with gradients: constants and float inputs require grad, observers pass
    values through, and the values of the watched observers are kept with their ``valid`` masks."""

    def __init__(self, gm: GraphModule, watched: set[str]) -> None:
        super().__init__(gm)
        self.watched = watched
        self.seen: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not value.requires_grad:
            value = value.detach().requires_grad_(True)
        return value

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if isinstance(module, RecentBatches):
            return None
        if isinstance(module, (Observer, ChannelStatistics)):
            if target in self.watched:
                self.seen.append((target, args[0], args[1] if len(args) > 1 else kwargs.get("valid")))
            return args[0]
        return super().call_module(target, args, kwargs)


def _leaves_requiring_grad(batch: tuple) -> tuple:
    return tuple(x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point()
                 else x for x in batch)


def _as_tree(output):
    return output.to_tuple() if hasattr(output, "to_tuple") else output  # a Hugging Face ModelOutput


def _accumulate(observer: HistogramCollector, x: torch.Tensor, grad: torch.Tensor, valid, sums: torch.Tensor,
                counts: torch.Tensor) -> None:
    """Add the moments a quadratic fit of g^2 against u = x / scale needs (``scale``: the largest magnitude the
    observer saw): sum u^k (k = 0..4) to ``counts`` and sum u^k g^2 (k = 0..2) to ``sums``, over the positions the
    observer recorded (``valid`` as ``Observer.forward`` applies it)."""
    if valid is not None and x.shape[:valid.dim()] == valid.shape and valid.any():
        x, grad = x[valid], grad[valid]
    u = x.float().flatten() / _scale(observer)  # in [-1, 1]: its powers fit in float32
    cost = grad.double().flatten().square()  # a float32 gradient squared may not
    u2 = u * u
    counts += torch.stack([torch.tensor(float(u.numel()), dtype=torch.float64),
                           *(term.sum(dtype=torch.float64) for term in (u, u2, u2 * u, u2 * u2))])
    sums += torch.stack([term.sum() for term in (cost, cost * u.double(), cost * u2.double())])


def _per_bin(observer, coefficients: np.ndarray, mean_cost: float) -> torch.Tensor:
    """The fitted quadratic E[g^2 | x] at the centre of each of ``observer``'s bins, at least a thousandth of the
    mean cost (a fit may dip below zero between its samples)."""
    low, high, bins = float(observer.min_val), float(observer.max_val), observer.bins
    centres = (low + (high - low) / bins * (np.arange(bins) + 0.5)) / _scale(observer)
    c0, c1, c2 = coefficients
    return torch.from_numpy(np.maximum(c0 + centres * (c1 + centres * c2), mean_cost * 1e-3))


def _scale(observer: HistogramCollector) -> float:
    return max(abs(float(observer.min_val)), abs(float(observer.max_val)), 1e-12)
