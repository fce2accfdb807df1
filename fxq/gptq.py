"""Error-compensating rounding of a Linear's weight to a few bits (GPTQ, Frantar et al. 2022), given the second
moments of the inputs the layer sees.

Rounding every weight to its nearest level ignores that a layer's error is what its outputs lose, which depends
on its inputs: with input moments H = E[x x^T], the output error of a weight error D is tr(D H D^T). GPTQ
rounds one input column at a time and moves each column's rounding error onto the columns not yet rounded, in
the proportions that minimise that output error (through the Cholesky factor of H's inverse), so later columns
absorb what earlier ones lost. Columns go in decreasing order of their input's second moment (the largest
inputs first, while the most columns remain to absorb their error), in blocks whose error reaches the rest in
one matrix product. Group scales are the caller's, fixed before the reordering scatters a group's columns.
"""

from __future__ import annotations

import torch

DAMPING = 0.01  # of H's mean diagonal, added to the diagonal: keeps the inverse well conditioned
BLOCK = 128


def gptq_levels(weight: torch.Tensor, moments: torch.Tensor, scales: torch.Tensor, bits: int,
                group_size: int) -> torch.Tensor:
    """int8 levels (out, in) for ``weight`` (out, in) on the given group ``scales`` (out, groups), with ``moments``
    (in, in) the mean of x x^T over the layer's inputs. Inputs that never vary (zero moment) get weight 0."""
    top = 2 ** (bits - 1) - 1
    w = weight.detach().float().clone()
    h = moments.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = torch.argsort(torch.diagonal(h), descending=True)  # the inputs that matter most rounded first
    w, h = w[:, order], h[order][:, order]
    column_scales = scales[:, order // group_size]
    h.diagonal().add_(DAMPING * float(torch.diagonal(h).mean()))
    inverse_factor = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    levels = torch.zeros_like(w, dtype=torch.int8)
    columns = w.shape[1]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        errors = torch.zeros(w.shape[0], end - start)
        for column in range(start, end):
            scale = column_scales[:, column]
            q = torch.clamp(torch.round(w[:, column] / scale), -top - 1, top)
            levels[:, column] = q.to(torch.int8)
            error = (w[:, column] - q * scale) / inverse_factor[column, column]
            w[:, column + 1:end] -= error[:, None] * inverse_factor[column, column + 1:end][None, :]
            errors[:, column - start] = error
        w[:, end:] -= errors @ inverse_factor[start:end, end:]
    restored = torch.empty_like(levels)
    restored[:, order] = levels
    return restored
