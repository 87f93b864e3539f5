"""Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021), as the FMLC seed uses it.

Inputs: ``logits`` (batch, labels) raw scores; ``targets`` (batch, labels) 0/1. With 37 labels and about two
positives per complaint, almost every (complaint, label) pair is an easy negative that plain BCE keeps pushing on.
ASL treats the two sides differently:

- positives: ``(1 - p) ** gamma_pos * log(p)`` (``gamma_pos`` 0: plain log-likelihood);
- negatives: the probability is shifted down by ``margin`` (``p_m = max(p - margin, 0)``), so negatives already
  below the margin contribute nothing, and the rest are focused: ``p_m ** gamma_neg * log(1 - p_m)``.

Summed over labels, averaged over the batch (the same scale as ``multilabel_bce`` so learning rates carry over).
Seed settings: ``gamma_neg`` 2, ``margin`` 0.05.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 2.0, gamma_pos: float = 0.0,
                    margin: float = 0.05, eps: float = 1e-8) -> torch.Tensor:
    p = torch.sigmoid(logits)
    p_m = (p - margin).clamp(min=0.0)
    pos = targets * (1 - p).pow(gamma_pos) * torch.log(p.clamp(min=eps))
    neg = (1 - targets) * p_m.pow(gamma_neg) * torch.log((1 - p_m).clamp(min=eps))
    return -(pos + neg).sum(1).mean()


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The baseline: binary cross-entropy per label, summed over labels, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
