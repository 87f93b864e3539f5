"""The unmatched inbox: what callers and chat customers said that fell back or matched weakly, grouped by meaning.

Each distinct wording is encoded with the serving encoder; k-means groups them, with k chosen by the
Calinski–Harabasz index (nlu.clustering). A group carries its wordings (most frequent first), how often each was
said, and the intent the matcher ranks first for the group's most central wording, as a suggestion for staff.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import or_, select

from knowledge_base.db import Store
from knowledge_base.models import Conversation, ConversationTurn, Scenario
from nlu.clustering import choose_k
from nlu.matcher import FALLBACK_INTENT, Matcher


@dataclass
class UnmatchedTurn:
    text: str
    intent: str | None
    score: float | None
    channel: str
    scenario: str | None


def unmatched_turns(store: Store, weak_below: float, since: datetime | None = None, channel: str | None = None,
                    scenario: str | None = None, limit: int = 5000) -> list[UnmatchedTurn]:
    """Customer turns that fell back, or whose best match scored below ``weak_below`` (newest first)."""
    q = (select(ConversationTurn.text, ConversationTurn.intent, ConversationTurn.score, Conversation.channel, Scenario.code)
         .join(Conversation, ConversationTurn.conversation_id == Conversation.id)
         .outerjoin(Scenario, Conversation.scenario_id == Scenario.id)
         # A turn without an intent never went through the NLU (said to an agent during a hand-over): not unmatched.
         .where(ConversationTurn.speaker == "user", ConversationTurn.intent.is_not(None),
                or_(ConversationTurn.intent == FALLBACK_INTENT, ConversationTurn.score.is_(None), ConversationTurn.score < weak_below)))
    if since is not None:
        q = q.where(ConversationTurn.at >= since)
    if channel:
        q = q.where(Conversation.channel == channel)
    if scenario:
        q = q.where(Scenario.code == scenario)
    with store.session() as s:
        rows = s.execute(q.order_by(ConversationTurn.id.desc()).limit(limit)).all()
    return [UnmatchedTurn(*row) for row in rows if row[0] and not row[0].startswith("/")]


def group_unmatched(matcher: Matcher, turns: list[UnmatchedTurn], max_groups: int = 12, seed: int = 0) -> dict[str, Any]:
    counts = Counter(t.text.strip() for t in turns if t.text.strip())
    texts = [t for t, _ in counts.most_common()]
    if not texts:
        return {"total": 0, "distinct": 0, "k": 0, "groups": []}
    vectors = np.asarray(matcher.encoder.encode(texts), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    if len(texts) >= 3:
        k, labels = choose_k(vectors, range(2, min(max_groups, len(texts) - 1) + 1), seed)
    else:
        k, labels = 0, np.zeros(len(texts), dtype=int)
    if k == 0:  # too few or all alike: one group
        k, labels = 1, np.zeros(len(texts), dtype=int)
    groups = []
    for c in range(k):
        idx = np.where(labels == c)[0]
        if len(idx) == 0:
            continue
        centroid = vectors[idx].mean(axis=0)
        central = texts[idx[int(np.argmax(vectors[idx] @ centroid))]]
        suggestion = matcher.match(central, None, 3).top
        members = sorted((texts[i] for i in idx), key=lambda t: -counts[t])
        groups.append({"id": c, "size": int(sum(counts[t] for t in members)), "representative": central,
                       "texts": [{"text": t, "count": counts[t]} for t in members],
                       "suggested_intent": None if suggestion is None else {
                           "intent_id": suggestion.intent_id, "intent": suggestion.intent, "scenario": suggestion.scenario,
                           "score": round(suggestion.score, 4), "standard_question": suggestion.standard_question}})
    groups.sort(key=lambda g: -g["size"])
    return {"total": sum(counts.values()), "distinct": len(texts), "k": k, "groups": groups}
