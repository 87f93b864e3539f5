"""K-means with the cluster count chosen by the Calinski–Harabasz index (the seed's clustering), over sentence vectors."""

from __future__ import annotations

import numpy as np


def choose_k(vectors: np.ndarray, candidates: range, seed: int) -> tuple[int, np.ndarray]:
    """k-means clusterings of ``vectors`` for each k; the one with the highest Calinski–Harabasz index."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score

    best = (-1.0, 0, np.zeros(len(vectors), dtype=int))
    for k in candidates:
        if k >= len(vectors):
            break
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors)
        if len(set(labels)) < 2:
            continue  # identical vectors: the index is undefined
        score = calinski_harabasz_score(vectors, labels)
        if score > best[0]:
            best = (score, k, labels)
    return best[1], best[2]
