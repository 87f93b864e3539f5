"""Call and chat records: one Conversation per Rasa sender id, its turns, its outcome."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select

from callbot.context import get_store
from callbot.pii import mask_sensitive
from knowledge_base.models import FOLLOW_UP_OUTCOMES, Conversation, ConversationTurn, Outcome, Scenario, utcnow

OUTCOME_WEIGHT = {"disputed": 4, "handed_over": 3, "complained": 2, "do_not_call": 2, "refused": 1, "wrong_person": 1, "callback": 1, "confirmed": 1}


class ConversationRecorder:
    def __init__(self, sender_id: str, channel: str = "chat", scenario: str | None = None):
        self.sender_id = sender_id
        self.store = get_store()
        with self.store.session("actions") as s:
            conv = s.scalar(select(Conversation).where(Conversation.external_id == sender_id))
            if conv is None:
                scenario_id = s.scalar(select(Scenario.id).where(Scenario.code == scenario)) if scenario else None
                conv = Conversation(external_id=sender_id, channel=channel, scenario_id=scenario_id)
                s.add(conv)
                s.flush()
            self.conversation_id = conv.id

    def _add_turn(self, speaker: str, text: str, **fields: Any) -> None:
        self._add_turns([(speaker, text, fields)])

    def _add_turns(self, turns: list[tuple[str, str, dict[str, Any]]]) -> None:
        """One transaction for all of a turn's lines (each commit is a disk sync on SQLite)."""
        with self.store.session("actions") as s:
            seq = s.scalar(select(func.max(ConversationTurn.seq)).where(ConversationTurn.conversation_id == self.conversation_id)) or 0
            for speaker, text, fields in turns:
                seq += 1
                s.add(ConversationTurn(conversation_id=self.conversation_id, seq=seq, speaker=speaker, text=text, **fields))

    def user(self, text: str, parse: dict[str, Any]) -> None:
        """A caller's or customer's turn. Numbers a caller reads out (mobile, resident ID) are stored masked,
        as in the logs; a channel's payload (/greet when the widget opens, /silence on a quiet line) is
        stored as an ``event``: it is not something the person said."""
        nlu = parse.get("callbot_nlu") or {}
        matched = nlu.get("matched") or {}
        intent = (parse.get("intent") or {}).get("name")
        text = text or ""
        if text.startswith("/"):
            self._add_turn("event", text, intent=intent)
            return
        self._add_turn("user", mask_sensitive(text), intent=matched.get("intent") or intent,
                       score=matched.get("score") or (parse.get("intent") or {}).get("confidence"),
                       matched_question=matched.get("question"), ranking=(nlu.get("ranking") or [])[:5])

    def bot(self, *texts: str) -> None:
        self._add_turns([("bot", mask_sensitive(text), {}) for text in texts])

    def note_compliance(self, text: str, rules: list[str], blocked: bool = True) -> None:
        """A bot line the guard blocked (``compliance_blocked``) or let through with a warning for staff to review
        (``compliance_flagged``). A line said again in the same conversation (a reprompt, an FAQ answer asked twice)
        is counted on its first entry (``times``), not listed again: staff review each line once."""
        entry = {"rules": rules, "text": mask_sensitive(text)}
        with self.store.session("actions") as s:
            conv = s.get(Conversation, self.conversation_id)
            detail = copy.deepcopy(conv.outcome_detail or {})  # a fresh value, so the JSON column sees the change
            key = "compliance_blocked" if blocked else "compliance_flagged"
            entries = detail.setdefault(key, [])
            same = next((e for e in entries if e.get("text") == entry["text"] and e.get("rules") == rules), None)
            if same is None:
                entries.append(entry)
            else:
                same["times"] = int(same.get("times", 1)) + 1
            conv.outcome_detail = detail

    def set_complaint_labels(self, labels: list[str]) -> None:
        with self.store.session("actions") as s:
            conv = s.get(Conversation, self.conversation_id)
            conv.complaint_labels = sorted(set(conv.complaint_labels or []) | set(labels))

    def finish(self, outcome: str, detail: dict[str, Any] | None = None, handed_over: bool = False) -> None:
        with self.store.session("actions") as s:
            conv = s.get(Conversation, self.conversation_id)
            # A chat can end more than once (hand-over, then "bye"): never downgrade a weightier outcome.
            if conv.outcome is None or OUTCOME_WEIGHT.get(outcome, 0) >= OUTCOME_WEIGHT.get(conv.outcome.value, 0):
                conv.outcome = Outcome(outcome)
            # The callback time is the caller's own words ("明天下午打我另一个号13912345678"): masked like a turn.
            clean = {k: mask_sensitive(v) if isinstance(v, str) else v for k, v in (detail or {}).items()}
            conv.outcome_detail = {**(conv.outcome_detail or {}), **clean}
            conv.ended_at = utcnow()
            conv.handed_over = conv.handed_over or handed_over or outcome == "handed_over"
            if conv.outcome in FOLLOW_UP_OUTCOMES and conv.follow_up is None:
                conv.follow_up = "open"  # staff must look into it and close it (POST /conversations/{id}/follow-up)
