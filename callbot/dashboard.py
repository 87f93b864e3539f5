"""The staff dashboard's figures, computed from conversations, turns and hand-overs over the last N days.

Grouping by day happens here rather than in SQL so the same code serves SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.models import Conversation, ConversationTurn, HandOver, Scenario, utcnow
from nlu.matcher import FALLBACK_INTENT


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summary(store: Store, days: int = 14) -> dict[str, Any]:
    start = (utcnow().replace(tzinfo=None) - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day_keys = [(start + timedelta(days=i)).date().isoformat() for i in range(days)]
    volume: dict[str, Counter[str]] = {d: Counter() for d in day_keys}
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    turns_by_day: dict[str, list[int]] = {d: [0, 0] for d in day_keys}  # [customer turns, fallbacks]
    unmatched: Counter[str] = Counter()
    with store.session() as s:
        for started, channel, code, outcome in s.execute(
                select(Conversation.started_at, Conversation.channel, Scenario.code, Conversation.outcome)
                .outerjoin(Scenario, Conversation.scenario_id == Scenario.id).where(Conversation.started_at >= start)):
            volume.setdefault(started.date().isoformat(), Counter())[channel] += 1
            outcomes[code or "chat"][outcome.value if outcome else "in_progress"] += 1
        for at, text, intent in s.execute(select(ConversationTurn.at, ConversationTurn.text, ConversationTurn.intent)
                                          .where(ConversationTurn.speaker == "user", ConversationTurn.at >= start,
                                                 ConversationTurn.intent.is_not(None))):  # None: said to an agent
            row = turns_by_day.setdefault(at.date().isoformat(), [0, 0])
            row[0] += 1
            if intent == FALLBACK_INTENT:
                row[1] += 1
                unmatched[text.strip()] += 1
        waits, waiting_now = [], 0
        for requested, picked, status in s.execute(select(HandOver.requested_at, HandOver.picked_at, HandOver.status)
                                                   .where(HandOver.requested_at >= start)):
            if picked is not None:
                waits.append((picked - requested).total_seconds())
            elif status.value == "waiting":
                waiting_now += 1
    channels = sorted({c for counts in volume.values() for c in counts})
    return {
        "days": day_keys, "channels": channels,
        "volume": [{"day": d, **{c: volume[d][c] for c in channels}, "total": sum(volume[d].values())} for d in day_keys],
        "outcome_rates": {code: {o: round(n / sum(c.values()), 4) for o, n in c.items()} | {"_total": sum(c.values())}
                          for code, c in sorted(outcomes.items())},
        "fallback_rate": [{"day": d, "turns": turns_by_day[d][0],
                           "rate": round(turns_by_day[d][1] / turns_by_day[d][0], 4) if turns_by_day[d][0] else None}
                          for d in day_keys],
        "top_unmatched": [{"text": t, "count": n} for t, n in unmatched.most_common(10) if t and not t.startswith("/")],
        "handover_wait_s": {"picked": len(waits), "p50": _percentile(waits, 0.5), "p90": _percentile(waits, 0.9),
                            "max": round(max(waits), 1) if waits else None, "waiting_now": waiting_now},
    }
