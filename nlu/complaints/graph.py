"""The label co-occurrence graph the gated graph network passes messages over.

From the training labels: ``P(j | i) = n(i, j) / n(i)``. An edge i → j where that is at least ``threshold`` and the
pair was seen ``min_pairs`` times (a single shared complaint is noise, not a relation). Rows are re-weighted as in
ML-GCN: a label keeps ``1 - p`` of itself and shares ``p`` among its neighbours, so two message-passing steps do
not wash out what the label attention found. ``identity`` is the ablation: no relations between labels.
"""

from __future__ import annotations

import numpy as np


def cooccurrence(y: np.ndarray, threshold: float = 0.2, min_pairs: int = 3, p: float = 0.3) -> np.ndarray:
    counts = y.T @ y  # (labels, labels): n(i, j), diagonal n(i)
    n = np.diag(counts).copy()
    cond = counts / np.maximum(n[:, None], 1)
    edges = (cond >= threshold) & (counts >= min_pairs)
    np.fill_diagonal(edges, False)
    adj = np.zeros_like(cond, dtype=np.float32)
    for i in range(len(n)):
        k = edges[i].sum()
        if k:
            adj[i, edges[i]] = p / k
            adj[i, i] = 1 - p
        else:
            adj[i, i] = 1.0
    return adj


def identity(labels: int) -> np.ndarray:
    return np.eye(labels, dtype=np.float32)


def edges(adj: np.ndarray) -> int:
    off = adj.copy()
    np.fill_diagonal(off, 0)
    return int((off > 0).sum())
