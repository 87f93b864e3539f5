"""Few-shot episodic loss for per-scenario fine-tuning (seed 003, weak supervision).

Inputs: ``query`` (q, dim) vectors of held-out queries; ``support`` (s, dim) vectors of support
examples; ``support_labels`` (s,) the intent index (0..n-1) of each support example; ``query_labels``
(q,) the gold intent index of each query. relation = cosine; score_i = max over intent i's support
examples; p = softmax(scale * score); loss = cross-entropy. Max (not mean) because an intent's
extension questions are often not paraphrases of each other ("忙" ← "开车呢", "在打比赛").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def episodic_loss(query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, query_labels: torch.Tensor,
                  n_way: int, scale: float = 30.0) -> torch.Tensor:
    cos = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T  # (q, s)
    scores = torch.full((len(query), n_way), -1.0, dtype=cos.dtype, device=cos.device)
    for i in range(n_way):
        cols = support_labels == i
        if cols.any():
            scores[:, i] = cos[:, cols].max(dim=1).values
    return F.cross_entropy(scale * scores, query_labels)
