"""Mining extension questions (扩展问) from what callers actually said.

FAQ teams grow their knowledge base from recorded conversations: a caller's wording that the bot
understood, but that no question in the knowledge base already says, is a new phrasing worth adding. The miner reads the callers' turns, groups
identical wordings, re-matches each one with the current model and knowledge base (a question added
since the call may already cover it), and proposes those that

- match one intent without ambiguity (decision ``match``: above the fallback threshold, clear of the
  runner-up by the calibrated margin), and
- are not already (nearly) in the knowledge base: similarity to the intent's closest question below
  ``near_duplicate``, and not one of its questions in any review state — a rejected wording stays rejected.

Utterances carrying personal data (digit runs such as phone, ID or account numbers, e-mail addresses)
are never proposed: extension questions are shown to every member of staff.
Proposals are ranked by how many conversations used the wording, then by match score.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import Conversation, ConversationTurn, ExtensionQuestion, Scenario
from nlu.matcher import Matcher
from nlu.text import normalise

# Four digits in a row (spaces and dashes allowed between them) already identify too much: account
# tails, verification codes, dates of birth in ID numbers.
_DIGIT_RUN = re.compile(r"\d(?:[\s-]?\d){3,}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.\w+")
_CHINESE_NUMBER_RUN = re.compile(r"[零一二三四五六七八九幺两]{4,}")  # 一三八… spoken digits from ASR
# Chat callers end with ？ or ~, ASR transcripts with nothing: one wording either way.
_TRAILING = re.compile(r"[\s?？!！。.,，~～…]+$")


@dataclass
class CallerUtterance:
    text: str
    scenario: str | None
    conversation_id: int
    at: datetime | None = None


@dataclass
class MinedQuestion:
    text: str
    intent_id: int
    intent: str
    scenario: str
    score: float  # similarity to the intent's closest question, current model
    nearest_question: str
    margin: float  # over the runner-up intent
    occurrences: int
    conversations: int
    examples: list[int] = field(default_factory=list)  # conversation ids, for staff to read the context

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class MiningReport:
    utterances: int = 0
    distinct: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    proposed: list[MinedQuestion] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"utterances": self.utterances, "distinct": self.distinct, "skipped": self.skipped,
                "proposed": [m.as_dict() for m in self.proposed]}


def has_personal_data(text: str) -> bool:
    return bool(_DIGIT_RUN.search(text) or _EMAIL.search(text) or _CHINESE_NUMBER_RUN.search(text))


def caller_utterances(store: Store, since: datetime | None = None, scenario: str | None = None,
                      limit: int = 50_000) -> list[CallerUtterance]:
    """The callers' turns, newest first, with their conversation's scenario."""
    with store.session() as s:
        if scenario is not None and s.scalar(select(Scenario.id).where(Scenario.code == scenario, Scenario.live())) is None:
            raise CallbotError(f"Scenario {scenario!r} does not exist; `callbot kb scenarios` lists them.")
        q = (select(ConversationTurn.text, Scenario.code, ConversationTurn.conversation_id, ConversationTurn.at)
             .join(Conversation, ConversationTurn.conversation_id == Conversation.id)
             .outerjoin(Scenario, Conversation.scenario_id == Scenario.id)
             .where(ConversationTurn.speaker == "user"))
        if since is not None:
            q = q.where(ConversationTurn.at >= since)
        if scenario is not None:
            q = q.where(Scenario.code == scenario)
        rows = s.execute(q.order_by(ConversationTurn.at.desc()).limit(limit)).all()
    return [CallerUtterance(text, code, conv, at) for text, code, conv, at in rows]


def _known_texts(store: Store) -> dict[int, set[str]]:
    """Every question text per intent, whatever its review state."""
    out: dict[int, set[str]] = {}
    with store.session() as s:
        for intent_id, text in s.execute(select(ExtensionQuestion.intent_id, ExtensionQuestion.text)):
            out.setdefault(intent_id, set()).add(text)
    return out


def mine(matcher: Matcher, store: Store, utterances: Iterable[CallerUtterance], near_duplicate: float = 0.98,
         min_chars: int = 2, max_chars: int = 80, min_conversations: int = 1, limit: int = 50,
         progress: bool = False) -> MiningReport:
    """Propose extension questions from caller utterances (see the module docstring)."""
    report = MiningReport()
    groups: dict[tuple[str, str | None], list[CallerUtterance]] = {}
    for u in utterances:
        report.utterances += 1
        try:
            text = _TRAILING.sub("", normalise(u.text))
        except CallbotError:
            report.skip("empty")
            continue
        if not text:
            report.skip("empty")
        elif text.startswith("/"):  # Rasa payloads (/affirm), buttons, not speech
            report.skip("payload")
        elif not min_chars <= len(text) <= max_chars:
            report.skip("length")
        elif has_personal_data(text):
            report.skip("personal data")
        else:
            groups.setdefault((text, u.scenario), []).append(u)
    report.distinct = len(groups)
    matcher.refresh()
    known = _known_texts(store)
    items = groups.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="re-matching caller wordings", unit="wording")
    for (text, scenario), seen in items:
        conversations = sorted({u.conversation_id for u in seen})
        if len(conversations) < min_conversations:
            report.skip("too rare", len(seen))
            continue
        try:
            result = matcher.match(text, scenario, k=2)
        except NotFound:  # the conversation's scenario was deleted since: match across the knowledge base
            result = matcher.match(text, None, k=2)
        top = result.top
        if result.decision != "match" or top is None:
            report.skip(result.decision, len(seen))
            continue
        if top.score >= near_duplicate or text in known.get(top.intent_id, set()) or text == top.standard_question:
            report.skip("already known", len(seen))
            continue
        margin = top.score - result.ranking[1].score if len(result.ranking) > 1 else 1.0
        report.proposed.append(MinedQuestion(text, top.intent_id, top.intent, top.scenario, top.score, top.question,
                                             margin, len(seen), len(conversations), conversations[:5]))
    report.proposed.sort(key=lambda m: (-m.conversations, -m.score))
    report.proposed = report.proposed[:limit]
    return report
