"""Supervised contrastive loss (Khosla et al. 2020) on a batch of projected sentence vectors.

Inputs: ``z`` (batch, dim) L2-normalised projections, ``labels`` (batch,) class indices. Each example is pulled
toward the others of its class and pushed from the rest, at ``temperature``. Examples alone in their class in the
batch contribute nothing. Used beside the focal loss so that paraphrased violations cluster with their class.
"""

from __future__ import annotations

import torch


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    counts = positives.sum(1)
    keep = counts > 0
    if not keep.any():
        return z.sum() * 0.0
    mean_pos = (log_prob * positives).sum(1)[keep] / counts[keep]
    return -mean_pos.mean()
