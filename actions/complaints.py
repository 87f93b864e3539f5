"""Complaint labelling against the knowledge base's taxonomy.

The installed FMLC model (``callbot complaint train``, nlu/complaints) labels a complaint; labels it knows but the
knowledge base no longer has are dropped (staff removed them). Without an installed model, a lexical baseline
scores each leaf label by IDF-weighted character bigrams shared with the label's name and description, and says
so in the log. Either way the labels are stored on the conversation.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from sqlalchemy import select

from callbot.context import get_store
from knowledge_base.models import ComplaintLabel


def _grams(text: str) -> set[str]:
    chars = [c for c in text if not c.isspace() and c not in "，。、！？,.!?的了吗呢啊"]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)} | set(chars)


log = logging.getLogger(__name__)


def classify_complaint(text: str) -> list[str]:
    """Leaf label codes for a complaint, best first (empty: nothing recognisable)."""
    from callbot.settings import get_settings
    from nlu.complaints.service import get_complaint_model

    settings = get_settings()
    model = get_complaint_model(settings.cache_dir, settings.models_dir)
    if model is None or not text.strip():
        return lexical_labels(text)
    known = set(label_names())
    result = model.classify([text])[0]
    labels = [s.label for s in result.labels if s.label in known]
    log.info("complaint labelled", extra={"fields": {"labels": labels, "tentative": result.tentative,
                                                     "scores": [round(s.score, 3) for s in result.labels]}})
    return labels


def topics_in_words(labels: list[str], most: int = 2) -> str:
    """What the bot says the complaint is about: "“收费过高”、“佣金不透明”" (KB names), or "" when unlabelled, so a
    prompt written as "您反映的{complaint_topics}问题" reads right either way."""
    if not labels:
        return ""
    names = label_names()
    return "、".join(f"“{names.get(code, code)}”" for code in labels[:most])


def label_names() -> dict[str, str]:
    """Leaf label code → the name staff gave it (what the bot says back to the customer)."""
    with get_store().session() as s:
        return {lb.code: lb.name for lb in s.scalars(select(ComplaintLabel).where(ComplaintLabel.parent_code.is_not(None)))}


def lexical_labels(text: str, top: int = 3, min_score: float = 2.0) -> list[str]:
    with get_store().session() as s:
        labels = [(lb.code, lb.name, lb.description) for lb in s.scalars(select(ComplaintLabel).where(ComplaintLabel.parent_code.is_not(None)))]
    return score_by_label_words(text, labels, top, min_score)


def score_by_label_words(text: str, labels: list[tuple[str, str, str]], top: int = 3, min_score: float = 2.0) -> list[str]:
    """The lexical baseline over (code, name, description) triples (also measured in benchmarks/complaints.py)."""
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
