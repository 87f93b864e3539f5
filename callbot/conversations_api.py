"""Conversation records for staff (Sanic blueprint): the hand-over queue, outcomes and transcripts.

GET /conversations?outcome=&handed_over=true|false&scenario=&channel=&limit=&offset=  newest first
GET /conversations/{external_id}                                                       with the turns
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from callbot.context import get_store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import Conversation, Outcome, Scenario

bp = Blueprint("conversations", url_prefix="/conversations")
MAX_LIMIT = 500


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CallbotError(f"{name} must be an integer between {low} and {high}.") from None
    if not low <= value <= high:
        raise CallbotError(f"{name} must be an integer between {low} and {high}.")
    return value


def _summary(conv: Conversation, scenario: str | None) -> dict[str, Any]:
    return {"id": conv.external_id, "channel": conv.channel, "scenario": scenario,
            "started_at": conv.started_at.isoformat() if conv.started_at else None,
            "ended_at": conv.ended_at.isoformat() if conv.ended_at else None,
            "outcome": conv.outcome.value if conv.outcome else None, "outcome_detail": conv.outcome_detail or {},
            "handed_over": conv.handed_over, "complaint_labels": conv.complaint_labels or []}


@bp.get("/")
async def list_conversations(request: Request) -> HTTPResponse:
    limit = _int_arg(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_arg(request, "offset", 0, 0, 10**9)
    query = select(Conversation, Scenario.code).outerjoin(Scenario, Conversation.scenario_id == Scenario.id)
    outcome = request.args.get("outcome")
    if outcome:
        if outcome not in {o.value for o in Outcome}:
            raise CallbotError(f"Unknown outcome {outcome!r}; one of: {', '.join(o.value for o in Outcome)}.")
        query = query.where(Conversation.outcome == Outcome(outcome))
    handed = request.args.get("handed_over")
    if handed is not None:
        if handed not in ("true", "false"):
            raise CallbotError("handed_over must be true or false.")
        query = query.where(Conversation.handed_over.is_(handed == "true"))
    if request.args.get("scenario"):
        query = query.where(Scenario.code == request.args.get("scenario"))
    if request.args.get("channel"):
        query = query.where(Conversation.channel == request.args.get("channel"))
    with get_store().session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery()))
        rows = s.execute(query.order_by(Conversation.id.desc()).limit(limit).offset(offset)).all()
        return json({"total": total, "conversations": [_summary(conv, code) for conv, code in rows]})


@bp.get("/<external_id:str>")
async def get_conversation(_request: Request, external_id: str) -> HTTPResponse:
    with get_store().session() as s:
        row = s.execute(select(Conversation, Scenario.code).outerjoin(Scenario, Conversation.scenario_id == Scenario.id)
                        .options(selectinload(Conversation.turns)).where(Conversation.external_id == external_id[:128])).first()
        if row is None:
            raise NotFound(f"No conversation {external_id!r}.")
        conv, code = row
        turns = [{"seq": t.seq, "speaker": t.speaker, "text": t.text, "intent": t.intent, "score": t.score,
                  "matched_question": t.matched_question, "at": t.at.isoformat() if t.at else None} for t in conv.turns]
        return json({**_summary(conv, code), "turns": turns})
