"""Distillation loss: the student's sentence vector should point where the teacher's does.

Inputs: ``student`` (batch, dim) raw student vectors, ``teacher`` (batch, dim) teacher vectors (any
norm). Loss = mean(1 - cos) + ``mse_weight`` * MSE between the L2-normalised vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 1.0) -> torch.Tensor:
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    cosine = (1 - (s * t).sum(-1)).mean()
    return cosine + mse_weight * F.mse_loss(s, t) * s.shape[-1]
