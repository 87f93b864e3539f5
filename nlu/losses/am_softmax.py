"""In-batch similarity loss with AM-softmax (SimF in the seed; SimBERT's variant when margin = 0).

Inputs: ``vectors`` (n, dim) sentence vectors of a batch; ``positive`` (n,) index of each row's
paraphrase partner within the batch. Every other row is a negative; a row never scores itself.
Optional ``negatives`` (m, dim): extra columns every row must score below its partner — hard
negatives such as LCQMC/BQ label-0 pairs, which share words with the anchor but not its meaning.
logits_ij = scale * (cos_ij - margin * [j == positive_i]); loss = cross-entropy over j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def am_softmax_loss(vectors: torch.Tensor, positive: torch.Tensor, scale: float = 30.0, margin: float = 0.35,
                    negatives: torch.Tensor | None = None) -> torch.Tensor:
    v = F.normalize(vectors, dim=-1)
    columns = v if negatives is None or len(negatives) == 0 else torch.cat([v, F.normalize(negatives, dim=-1)])
    cos = v @ columns.T
    eye = torch.zeros_like(cos, dtype=torch.bool)
    eye[:, : len(v)] = torch.eye(len(v), dtype=torch.bool, device=v.device)
    target = F.one_hot(positive, columns.shape[0]).to(cos.dtype)
    logits = scale * (cos - margin * target)
    logits = logits.masked_fill(eye, float("-inf"))
    return F.cross_entropy(logits, positive)
