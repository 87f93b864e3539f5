"""Focal loss (Lin et al. 2017): cross-entropy that down-weights examples the model already gets right.

Inputs: ``logits`` (batch, classes), ``target`` (batch,) class indices, optional ``weight`` (batch,) per-example
weights (pseudo-labelled examples count less). ``gamma`` 2 as the seed sets it; gamma 0 is plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    loss = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        return (loss * weight).sum() / weight.sum().clamp_min(1e-8)
    return loss.mean()
