"""The compliance head's training pieces on small synthetic inputs: focal loss, the supervised contrastive term and
the Calinski–Harabasz choice of the cluster count behind the pseudo-labels (nlu/losses, nlu/clustering)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nlu.clustering import choose_k
from nlu.losses.focal import focal_loss
from nlu.losses.supcon import supcon_loss


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_discounts_easy_examples() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 3.0, 0.0]])
    target = torch.tensor([0, 0, 2])
    assert torch.isclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    easy, hard = focal_loss(logits[:1], target[:1]), focal_loss(logits[2:], target[2:])
    ce_easy, ce_hard = F.cross_entropy(logits[:1], target[:1]), F.cross_entropy(logits[2:], target[2:])
    # γ = 2 shrinks a confident right answer far more than a confident wrong one.
    assert easy / ce_easy < 0.01 and hard / ce_hard > 0.9
    weighted = focal_loss(logits, target, weight=torch.tensor([0.0, 0.0, 1.0]))
    assert torch.isclose(weighted, hard), "a zero-weight (pseudo-labelled) example counts for nothing"


def test_supervised_contrastive_loss_prefers_classes_that_cluster() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    together = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    mixed = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]), dim=1)
    assert supcon_loss(together, labels) < supcon_loss(mixed, labels)
    alone = supcon_loss(together, torch.tensor([0, 1, 2, 3]))
    assert alone.item() == 0.0, "examples alone in their class contribute nothing"


def test_the_cluster_count_is_the_one_the_calinski_harabasz_index_prefers() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 10
    vectors = np.concatenate([c + rng.normal(size=(40, 16)) for c in centres])
    k, labels = choose_k(vectors, range(2, 11), seed=0)
    assert k == 5 and len(set(labels)) == 5
    # Each true blob lands in one cluster.
    assert all(len(set(labels[i * 40:(i + 1) * 40])) == 1 for i in range(5))
