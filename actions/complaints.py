"""Complaint labelling against the knowledge base's taxonomy (a lexical baseline).

Scores each leaf label by IDF-weighted character bigrams shared between the complaint and the label's
name and description. It stands in until the trained multi-label classifier lands; its labels are
stored on the conversation either way.
"""

from __future__ import annotations

import math
from collections import Counter

from sqlalchemy import select

from callbot.context import get_store
from knowledge_base.models import ComplaintLabel


def _grams(text: str) -> set[str]:
    chars = [c for c in text if not c.isspace() and c not in "，。、！？,.!?的了吗呢啊"]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)} | set(chars)


def classify_complaint(text: str, top: int = 3, min_score: float = 2.0) -> list[str]:
    with get_store().session() as s:
        labels = [(lb.code, lb.name, lb.description) for lb in s.scalars(select(ComplaintLabel).where(ComplaintLabel.parent_code.is_not(None)))]
    if not labels:
        return []
    docs = {code: _grams(name) | _grams(desc) for code, name, desc in labels}
    df: Counter[str] = Counter(g for grams in docs.values() for g in grams)
    query = _grams(text)
    scores = {}
    for code, grams in docs.items():
        shared = query & grams
        scores[code] = sum(math.log(1 + len(docs) / df[g]) * (2.0 if len(g) == 2 else 0.5) for g in shared)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return [code for code, score in ranked[:top] if score >= min_score]
