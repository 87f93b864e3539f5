"""A linear intent head over the encoder's frozen question vectors, beside the nearest-neighbour ranking.

The matcher ranks intents by the cosine of their closest question. A logistic regression fitted on every
question's vector (label: the intent's name, so `affirm` of every scenario is one class and `out_of_scope` is a
class like any other) sees the whole spread of an intent's wordings instead of its single nearest one. The matcher
adds ``weight × log p(intent)`` to each candidate's cosine to *order* the candidates; the cosine stays the score
the thresholds judge, so calibrated thresholds keep their meaning. Renormalising the head over the candidates only
shifts every candidate by the same constant, so the order is the same as over all classes.

Measured on the held-out dev utterances with the released ALBERT-sim (two-fold cross-fitted thresholds, chatter
held at ≥ 95 % rejected): caller replies 0.893 → 0.902, FAQ questions 0.940 → 0.952 at weight 0.03, C = 10
(docs/nlu.md, fourteenth session). Off by default (``nlu.intent_head_weight`` = 0) until a test split confirms it.

Fitting takes tens of seconds on 10k questions and two cores, so the matcher fits in a background thread after
each knowledge-base change and ranks by the neighbours alone until the new head is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class IntentHead:
    classes: tuple[str, ...]
    coef: np.ndarray  # (classes, dim)
    intercept: np.ndarray  # (classes,)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.classes)})

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: list[str], c: float = 10.0) -> IntentHead:
        """Fit on unit-norm question vectors; balanced class weights, so an intent with 400 wordings does not
        drown one with 20."""
        from sklearn.linear_model import LogisticRegression

        if len(vectors) != len(labels):
            raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("an intent head needs at least two intents")
        index = {name: i for i, name in enumerate(classes)}
        y = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(vectors, y)
        return cls(tuple(classes), model.coef_.astype(np.float32), model.intercept_.astype(np.float32))

    def log_proba(self, query: np.ndarray, names: list[str]) -> dict[str, float]:
        """Log-probability of each named intent, normalised over those of ``names`` the head knows (an intent
        added since the fit is left out: the caller ranks it by its cosine alone)."""
        known = [n for n in dict.fromkeys(names) if n in self._index]
        if not known:
            return {}
        rows = [self._index[n] for n in known]
        logits = self.coef[rows] @ query.astype(np.float32) + self.intercept[rows]
        logits = logits - logits.max()
        log_z = np.log(np.exp(logits).sum())
        return {n: float(v - log_z) for n, v in zip(known, logits, strict=True)}
