"""Distillation loss: the student's sentence vector should point where the teacher's does, and rank
the other sentences of the batch the way the teacher ranks them.

Inputs: ``student`` (batch, dim) raw student vectors, ``teacher`` (batch, dim) teacher vectors (any
norm). Loss = mean(1 - cos) + ``mse_weight`` * MSE between the L2-normalised vectors
+ ``relation_weight`` * KL(teacher ‖ student) over each row's softmax of in-batch cosines / ``temperature``
(the diagonal excluded).

Why the relational term: e5's vectors share a large common direction (random sentences score 0.7–0.85),
so a student at cosine 0.96 to its teacher can still order neighbours quite differently — and
retrieval only cares about that order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 1.0,
                      relation_weight: float = 0.0, temperature: float = 0.05) -> torch.Tensor:
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    cosine = (1 - (s * t).sum(-1)).mean()
    loss = cosine + mse_weight * F.mse_loss(s, t) * s.shape[-1]
    if relation_weight and len(s) > 2:
        return loss + relation_weight * relation_loss(s, t, temperature)
    return loss


def relation_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """KL between the teacher's and the student's in-batch neighbour distributions (normalised inputs)."""
    eye = torch.eye(len(s), dtype=torch.bool, device=s.device)
    student_logits = (s @ s.T / temperature).masked_fill(eye, float("-inf"))
    teacher_logits = (t @ t.T / temperature).masked_fill(eye, float("-inf"))
    log_p_student = F.log_softmax(student_logits, dim=-1).masked_fill(eye, 0.0)
    p_teacher = F.softmax(teacher_logits, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits, dim=-1).masked_fill(eye, 0.0)
    return (p_teacher * (log_p_teacher - log_p_student)).sum(-1).mean()
