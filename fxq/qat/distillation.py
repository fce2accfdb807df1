"""Distillation losses for training a fake-quantized student against its float teacher (the float model).

The teacher's outputs carry more than the labels: how sure it is, and which wrong classes are close. A student
trained towards them recovers quantization error faster than from labels alone, and needs no labels at all for
embedding models, where the teacher's vectors are the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxq.errors import ConfigError


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None,
                      temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """``alpha`` x the KL divergence from the teacher's softened distribution to the student's (scaled by
    temperature squared, so its gradients keep their size as the temperature changes) + (1 - ``alpha``) x the
    cross entropy with ``target``; with no ``target``, the divergence alone.

    Raises:
        ConfigError: a temperature <= 0, an alpha outside [0, 1], or logits of different shapes.
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"distillation_loss needs temperature > 0 and 0 <= alpha <= 1; got temperature="
                          f"{temperature}, alpha={alpha}")
    _same_shape(student_logits, teacher_logits)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits.detach() / temperature, dim=-1), log_target=True,
                    reduction="batchmean") * temperature ** 2
    if target is None:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, target)


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1 - the mean cosine similarity along ``dim`` (embeddings, hidden states): 0 when the student's vectors
    point where the teacher's do, whatever their lengths."""
    _same_shape(student, teacher)
    return 1 - F.cosine_similarity(student, teacher.detach(), dim=dim).mean()


def _same_shape(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ConfigError(f"the student's output has shape {tuple(student.shape)} and the teacher's "
                          f"{tuple(teacher.shape)}; distill matching outputs")
