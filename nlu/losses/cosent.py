"""CoSENT: every labelled pair's cosine ranked against every other pair's (Su Jianlin, 2022).

Inputs: ``cos`` (n,) cosine of each of n sentence pairs; ``labels`` (n,) 1 for a paraphrase, 0 for not.
loss = log(1 + Σ_{i: y_i=0, j: y_j=1} exp(scale · (cos_i − cos_j))); scale 20 as in the write-up.
Unlike the in-batch AM-softmax, which ranks one row's partner above that row's negatives, this puts
every positive pair above every negative pair of the batch — the one global ordering that Spearman and
a single match threshold ask for. A batch without both labels costs nothing.
"""

from __future__ import annotations

import torch


def cosent_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    if cos.shape != labels.shape or cos.dim() != 1:
        raise ValueError(f"cos and labels must be 1-d and alike (got {tuple(cos.shape)} and {tuple(labels.shape)}).")
    diff = scale * (cos[:, None] - cos[None, :])  # [i, j]: how far negative i is above positive j
    wrong_order = (labels[:, None] < labels[None, :])
    return torch.logsumexp(torch.cat([cos.new_zeros(1), diff[wrong_order]]), dim=0)
