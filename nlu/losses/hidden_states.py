"""Hidden-state distillation (TinyBERT's layer loss): each pass of the student should reproduce, token
by token, the hidden states of the e5 layer it stands for.

Inputs: ``student`` and ``teacher``, lists of the same length (one entry per matched layer) of
(batch, length, hidden) states — the lengths may differ (e5 reads a ``query: `` prefix); ``rows``,
``student_pos``, ``teacher_pos``: 1-D LongTensors of equal size naming the aligned tokens (the same
text piece in both sequences). Loss = the mean over layers of the MSE over aligned tokens, each layer's
divided by the teacher layer's mean square there, so a layer with large activations (e5 has a few
outlier dimensions) does not drown the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hidden_state_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], rows: torch.Tensor,
                      student_pos: torch.Tensor, teacher_pos: torch.Tensor) -> torch.Tensor:
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers against {len(teacher)} teacher layers")
    if rows.numel() == 0:
        return student[0].new_zeros(())
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        s_tok, t_tok = s[rows, student_pos], t[rows, teacher_pos]
        total = total + F.mse_loss(s_tok, t_tok) / t_tok.pow(2).mean().clamp(min=1e-6)
    return total / len(student)
