"""Hand-overs of chats: the queue, picking one, the transcript, an agent's reply, closing with an outcome.

Customer and agent lines during a hand-over are stored as conversation turns (speaker ``user`` / ``agent``),
so the transcript, the widget's history after a reload and the staff's conversation view all see them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from callbot.pii import mask_sensitive
from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import Conversation, ConversationTurn, HandOver, HandOverStatus, StaffUser, utcnow

OUTCOMES = ("resolved", "callback", "unresolved", "complaint")
MAX_REPLY = 4000


class HandOverConflict(CallbotError):
    http_status = 409


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _json(h: HandOver, agent_name: str | None = None) -> dict[str, Any]:
    wait = ((h.picked_at or utcnow().replace(tzinfo=None)) - h.requested_at).total_seconds()
    return {"id": h.id, "session_id": h.external_id, "channel": h.channel, "status": h.status.value, "reason": h.reason,
            "requested_at": _iso(h.requested_at), "picked_at": _iso(h.picked_at), "agent": h.agent,
            "agent_name": agent_name or h.agent, "closed_at": _iso(h.closed_at), "outcome": h.outcome, "note": h.note,
            "wait_s": round(wait, 1)}


class AgentDesk:
    def __init__(self, store: Store):
        self.store = store

    # ------------------------------------------------------------------ the customer's side
    def open_for(self, session_id: str) -> dict[str, Any] | None:
        """The session's waiting or active hand-over, if any."""
        with self.store.session() as s:
            h = s.scalar(select(HandOver).where(HandOver.external_id == session_id,
                                                HandOver.status != HandOverStatus.closed).order_by(HandOver.id.desc()))
            if h is None:
                return None
            name = s.scalar(select(StaffUser.display_name).where(StaffUser.username == h.agent)) if h.agent else None
            return _json(h, name)

    def request(self, session_id: str, reason: str, channel: str = "chat") -> dict[str, Any]:
        """Queue the session for an agent (idempotent while one is open)."""
        current = self.open_for(session_id)
        if current is not None:
            return current
        with self.store.session("desk") as s:
            self._conversation(s, session_id, channel).handed_over = True
            h = HandOver(external_id=session_id, channel=channel, reason=reason[:64], status=HandOverStatus.waiting,
                         requested_at=utcnow().replace(tzinfo=None))
            s.add(h)
            s.flush()
            return _json(h)

    def customer_said(self, session_id: str, text: str) -> int:
        with self.store.session("desk") as s:
            return self._add_turn(s, self._conversation(s, session_id, "chat"), "user", mask_sensitive(text))

    # ------------------------------------------------------------------ the agent's side
    def queue(self, include_closed: int = 0) -> dict[str, Any]:
        with self.store.session() as s:
            open_rows = s.scalars(select(HandOver).where(HandOver.status != HandOverStatus.closed).order_by(HandOver.requested_at)).all()
            closed = s.scalars(select(HandOver).where(HandOver.status == HandOverStatus.closed)
                               .order_by(HandOver.closed_at.desc()).limit(include_closed)).all() if include_closed else []
            return {"open": [_json(h) for h in open_rows], "closed": [_json(h) for h in closed]}

    def pick(self, handover_id: int, agent: str) -> dict[str, Any]:
        with self.store.session(agent) as s:
            h = self._open_to(s, handover_id, agent)
            if h.status == HandOverStatus.waiting:
                h.status, h.agent, h.picked_at = HandOverStatus.active, agent, utcnow().replace(tzinfo=None)
            s.flush()
            return _json(h)

    def transcript(self, handover_id: int, after: int = 0) -> dict[str, Any]:
        with self.store.session() as s:
            h = self._get(s, handover_id)
            conv = s.scalar(select(Conversation).where(Conversation.external_id == h.external_id))
            turns = [] if conv is None else s.scalars(select(ConversationTurn).where(
                ConversationTurn.conversation_id == conv.id, ConversationTurn.seq > after,
                ConversationTurn.speaker != "event").order_by(ConversationTurn.seq)).all()
            return {"handover": _json(h), "turns": [{"seq": t.seq, "speaker": t.speaker, "text": t.text, "intent": t.intent,
                                                      "score": t.score, "at": _iso(t.at)} for t in turns]}

    def reply(self, handover_id: int, agent: str, text: str) -> dict[str, Any]:
        text = (text or "").strip()
        if not text:
            raise CallbotError("The reply is empty.")
        if len(text) > MAX_REPLY:
            raise CallbotError(f"The reply is {len(text)} characters long; at most {MAX_REPLY}.")
        with self.store.session(agent) as s:
            h = self._get(s, handover_id)
            if h.status != HandOverStatus.active or h.agent != agent:
                raise HandOverConflict("Pick this chat up before replying (it is not yours or not open).")
            seq = self._add_turn(s, self._conversation(s, h.external_id, h.channel), "agent", text)
            name = s.scalar(select(StaffUser.display_name).where(StaffUser.username == agent)) or agent
            return {"seq": seq, "session_id": h.external_id, "text": text, "agent_name": name}

    def flag_compliance(self, session_id: str, seq: int, hits: list[dict[str, Any]]) -> None:
        """An agent's line the compliance guard found prohibited wording in: it was sent (a person's words are
        reviewed, not replaced), and the conversation lists it under ``compliance_review`` as the transcript
        review does (`callbot compliance review`)."""
        with self.store.session("compliance-guard") as s:
            conv = s.scalar(select(Conversation).where(Conversation.external_id == session_id))
            if conv is None:
                return
            found = list((conv.outcome_detail or {}).get("compliance_review") or [])
            found.append({"seq": seq, "speaker": "agent", "rules": [h["rule"] for h in hits],
                          "severity": [h["severity"] for h in hits], "tags": [], "customer": False})
            conv.outcome_detail = {**(conv.outcome_detail or {}), "compliance_review": found}

    def close(self, handover_id: int, agent: str, outcome: str, note: str = "") -> dict[str, Any]:
        if outcome not in OUTCOMES:
            raise CallbotError(f"outcome must be one of {', '.join(OUTCOMES)}.")
        with self.store.session(agent) as s:
            h = self._open_to(s, handover_id, agent)
            h.status, h.outcome, h.note = HandOverStatus.closed, outcome, mask_sensitive(note[:2000])
            h.closed_at = utcnow().replace(tzinfo=None)
            h.agent = h.agent or agent
            conv = self._conversation(s, h.external_id, h.channel)
            conv.outcome_detail = {**(conv.outcome_detail or {}), "agent_outcome": outcome, "agent": h.agent}
            s.flush()
            return _json(h)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _get(s: Any, handover_id: int) -> HandOver:
        h = s.get(HandOver, handover_id)
        if h is None:
            raise NotFound(f"No hand-over {handover_id}.")
        return h

    def _open_to(self, s: Any, handover_id: int, agent: str) -> HandOver:
        """The hand-over, if ``agent`` may act on it: not closed, and waiting or theirs."""
        h = self._get(s, handover_id)
        if h.status == HandOverStatus.closed:
            raise HandOverConflict("This chat was closed already.")
        if h.status == HandOverStatus.active and h.agent != agent:
            raise HandOverConflict(f"{h.agent} has this chat; only they can reply to or close it.")
        return h

    @staticmethod
    def _conversation(s: Any, session_id: str, channel: str) -> Conversation:
        conv = s.scalar(select(Conversation).where(Conversation.external_id == session_id))
        if conv is None:
            conv = Conversation(external_id=session_id, channel=channel)
            s.add(conv)
            s.flush()
        return conv

    @staticmethod
    def _add_turn(s: Any, conv: Conversation, speaker: str, text: str) -> int:
        seq = (s.scalar(select(func.max(ConversationTurn.seq)).where(ConversationTurn.conversation_id == conv.id)) or 0) + 1
        s.add(ConversationTurn(conversation_id=conv.id, seq=seq, speaker=speaker, text=text))
        return seq
