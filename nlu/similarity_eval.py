"""Sentence-pair similarity measurements: Spearman×100, best-threshold accuracy, and a BM25 baseline."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy.stats import spearmanr

from nlu.data.corpora import Pair


def encoder_scores(encoder, pairs: list[Pair], batch_size: int = 128) -> np.ndarray:  # type: ignore[no-untyped-def]
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))
    index = {s: i for i, s in enumerate(sentences)}
    vecs = encoder.encode(sentences, batch_size=batch_size)
    a = vecs[[index[p.a] for p in pairs]]
    b = vecs[[index[p.b] for p in pairs]]
    return (a * b).sum(1)


def _bigrams(text: str) -> list[str]:
    chars = [c for c in text if not c.isspace()]
    return [a + b for a, b in zip(chars, chars[1:], strict=False)] or chars


def bm25_scores(pairs: list[Pair], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Symmetric character-bigram BM25 (IDF over all sentences of the set): the lexical baseline."""
    docs = {s: _bigrams(s) for p in pairs for s in (p.a, p.b)}
    df: Counter[str] = Counter()
    for grams in docs.values():
        df.update(set(grams))
    n = len(docs)
    avg = sum(len(g) for g in docs.values()) / max(1, n)

    def score(q: str, d: str) -> float:
        tf = Counter(docs[d])
        length = len(docs[d])
        total = 0.0
        for g in set(docs[q]):
            if g in tf:
                idf = math.log(1 + (n - df[g] + 0.5) / (df[g] + 0.5))
                total += idf * tf[g] * (k1 + 1) / (tf[g] + k1 * (1 - b + b * length / avg))
        return total

    return np.array([(score(p.a, p.b) + score(p.b, p.a)) / 2 for p in pairs])


def spearman100(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(spearmanr(scores, labels).statistic * 100)


def best_threshold_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    order = np.argsort(scores)
    s, y = scores[order], labels[order]
    # Predict 1 for scores > threshold; sweep every cut point.
    pos_right = np.concatenate([[0], np.cumsum(y[::-1])])[::-1]  # positives at or after i
    neg_left = np.concatenate([[0], np.cumsum(1 - y)])  # negatives before i
    correct = pos_right + neg_left
    i = int(np.argmax(correct))
    threshold = float(s[i - 1] + s[i]) / 2 if 0 < i < len(s) else (float(s[0]) - 1e-6 if i == 0 else float(s[-1]) + 1e-6)
    return float(correct[i] / len(y)), threshold


def evaluate_pairs(scores: np.ndarray, pairs: list[Pair]) -> dict[str, float]:
    labels = np.array([p.label for p in pairs])
    acc, threshold = best_threshold_accuracy(scores, labels)
    return {"spearman": round(spearman100(scores, labels), 2), "accuracy": round(acc * 100, 2), "threshold": round(threshold, 4)}
