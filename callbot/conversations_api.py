"""Conversation records for staff (Sanic blueprint): the hand-over queue, outcomes and transcripts.

GET /conversations?outcome=&handed_over=true|false&follow_up=open|closed&scenario=&channel=&limit=&offset=  newest first
GET /conversations/stats?scenario=&since=YYYY-MM-DD    outcome counts per scenario, open follow-ups
GET /conversations/complaints?label=&limit=           complaint counts per label (KB names), and the labelled
                                                      conversations (of one label if given), newest first
GET /conversations/unmatched?since=&channel=&scenario=  fallbacks and weak matches grouped by meaning
POST /conversations/unmatched/attach {"intent_id", "texts"}  a group's wordings → approved extension questions
GET /conversations/dashboard?days=14                  the console's dashboard figures
GET /conversations/{external_id}                      with the turns
GET /conversations/{external_id}/recording            the call's stereo WAV
POST /conversations/{external_id}/follow-up {"note": "…"}   close a follow-up (the signed-in user is recorded)
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from callbot.context import get_store
from callbot.pii import mask_sensitive
from knowledge_base.api import _actor, _body
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import Conversation, Outcome, Scenario, utcnow

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
            "handed_over": conv.handed_over, "complaint_labels": conv.complaint_labels or [],
            "follow_up": _follow_up(conv),
            "recording": f"/conversations/{conv.external_id}/recording" if conv.recording else None}


def _day(value: str | None, name: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(str(value)), datetime.min.time())
    except ValueError:
        raise CallbotError(f"{name} must be a date like 2026-12-01 (got {value!r}).") from None


def _follow_up(conv: Conversation) -> dict[str, Any] | None:
    if conv.follow_up is None:
        return None
    return {"status": conv.follow_up, "note": conv.follow_up_note or "", "closed_by": conv.follow_up_closed_by,
            "closed_at": conv.follow_up_closed_at.isoformat() if conv.follow_up_closed_at else None}


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
    follow_up = request.args.get("follow_up")
    if follow_up is not None:
        if follow_up not in ("open", "closed"):
            raise CallbotError("follow_up must be open or closed.")
        query = query.where(Conversation.follow_up == follow_up)
    if request.args.get("scenario"):
        query = query.where(Scenario.code == request.args.get("scenario"))
    if request.args.get("channel"):
        query = query.where(Conversation.channel == request.args.get("channel"))
    if request.args.get("since"):
        query = query.where(Conversation.started_at >= _day(request.args.get("since"), "since"))
    if request.args.get("until"):  # inclusive: the whole day
        query = query.where(Conversation.started_at < _day(request.args.get("until"), "until") + timedelta(days=1))
    with get_store().session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery()))
        rows = s.execute(query.order_by(Conversation.id.desc()).limit(limit).offset(offset)).all()
        return json({"total": total, "conversations": [_summary(conv, code) for conv, code in rows]})


@bp.get("/stats")
async def conversation_stats(request: Request) -> HTTPResponse:
    """Outcome counts per scenario (chat has none), each outcome on its own: a disputed business is never
    folded into completed calls. ``open_follow_ups`` is what staff still have to close."""
    query = select(Scenario.code, Conversation.outcome, func.count()).outerjoin(
        Scenario, Conversation.scenario_id == Scenario.id).group_by(Scenario.code, Conversation.outcome)
    if request.args.get("scenario"):
        query = query.where(Scenario.code == request.args.get("scenario"))
    since = request.args.get("since")
    if since:
        try:
            start = datetime.combine(date.fromisoformat(since), datetime.min.time())
        except ValueError:
            raise CallbotError(f"since must be a date like 2026-12-01 (got {since!r}).") from None
        query = query.where(Conversation.started_at >= start)
    per: dict[str, dict[str, int]] = {}
    with get_store().session() as s:
        for code, outcome, n in s.execute(query):
            row = per.setdefault(code or "chat", {})
            key = outcome.value if outcome else "in_progress"
            row[key] = row.get(key, 0) + n
        open_follow_ups = s.scalar(select(func.count()).where(Conversation.follow_up == "open")) or 0
    return json({"outcomes": [o.value for o in Outcome], "per_scenario": per,
                 "total": {o: sum(r.get(o, 0) for r in per.values()) for o in [*(o.value for o in Outcome), "in_progress"]},
                 "open_follow_ups": open_follow_ups})


@bp.get("/complaints")
async def complaints_by_label(request: Request) -> HTTPResponse:
    """Complaints as the classifier labelled them. JSON lists cannot be searched the same way on SQLite and
    PostgreSQL, so conversations with any label are read and grouped here (complaints are a small share)."""
    from knowledge_base.models import ComplaintLabel, ConversationTurn

    limit = _int_arg(request, "limit", 50, 1, MAX_LIMIT)
    wanted = request.args.get("label")
    with get_store().session() as s:
        taxonomy = {lb.code: lb for lb in s.scalars(select(ComplaintLabel))}
        if wanted and wanted not in taxonomy and wanted != "unclassified":
            raise CallbotError(f"Unknown complaint label {wanted!r}; GET /conversations/complaints without ?label lists the labels in use.")
        rows = s.execute(select(Conversation, Scenario.code).outerjoin(Scenario, Conversation.scenario_id == Scenario.id)
                         .where(func.json_array_length(Conversation.complaint_labels) > 0)
                         .order_by(Conversation.id.desc())).all()
        counts: dict[str, int] = {}
        for conv, _code in rows:
            for label in conv.complaint_labels:
                counts[label] = counts.get(label, 0) + 1
        chosen = [(conv, code) for conv, code in rows if not wanted or wanted in conv.complaint_labels][:limit]
        said: dict[int, str] = {}
        if chosen:
            for turn in s.scalars(select(ConversationTurn).where(
                    ConversationTurn.conversation_id.in_([c.id for c, _ in chosen]), ConversationTurn.intent == "complain")
                    .order_by(ConversationTurn.seq)):
                said.setdefault(turn.conversation_id, turn.text)
        labels = []
        for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            node = taxonomy.get(label)
            parent = taxonomy.get(node.parent_code) if node is not None and node.parent_code else None
            labels.append({"code": label, "name": node.name if node else label, "category": parent.name if parent else None, "count": n})
        return json({"labels": labels, "label": wanted,
                     "conversations": [{**_summary(conv, code), "complaint": mask_sensitive(said.get(conv.id, ""))[:500]}
                                       for conv, code in chosen]})


@bp.get("/unmatched")
async def unmatched(request: Request) -> HTTPResponse:
    """What customers said that fell back or matched weakly, grouped by meaning (k-means, k by Calinski–Harabasz).
    ``?since=YYYY-MM-DD&channel=&scenario=&margin=0.02`` (weak = best score below the fallback threshold + margin)."""
    import asyncio

    from nlu.api import ENCODING
    from nlu.service import get_matcher
    from nlu.unmatched import group_unmatched, unmatched_turns

    since = _day(request.args.get("since"), "since") if request.args.get("since") else None
    try:
        margin = float(request.args.get("margin", 0.02))
    except ValueError:
        raise CallbotError("margin must be a number (e.g. 0.02).") from None
    matcher = get_matcher()
    turns = unmatched_turns(get_store(), matcher.thresholds.fallback + margin, since, request.args.get("channel") or None,
                            request.args.get("scenario") or None)
    grouped = await asyncio.get_running_loop().run_in_executor(ENCODING, group_unmatched, matcher, turns)
    return json({**grouped, "weak_below": round(matcher.thresholds.fallback + margin, 4)})


@bp.post("/unmatched/attach")
async def attach_unmatched(request: Request) -> HTTPResponse:
    """``{"intent_id": N, "texts": ["…"]}``: a group's wordings become approved extension questions of the intent
    at once (live on the next parse); wordings the intent has already are reported, not duplicated."""
    from callbot.context import get_kb
    from knowledge_base.models import QuestionSource, ReviewStatus

    body = _body(request)
    texts, intent_id = body.get("texts"), body.get("intent_id")
    if not isinstance(intent_id, int) or not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise CallbotError('Send {"intent_id": 12, "texts": ["wording", …]}.')
    added, skipped = [], []
    for text in texts[:200]:
        try:
            added.append(get_kb().add_question(intent_id, text, _actor(request), QuestionSource.mined, ReviewStatus.approved))
        except NotFound:
            raise
        except CallbotError as exc:
            skipped.append({"text": text, "reason": str(exc)})
    return json({"intent_id": intent_id, "added": added, "skipped": skipped}, status=201 if added else 200)


@bp.get("/dashboard")
async def dashboard(request: Request) -> HTTPResponse:
    """The console's dashboard: volume by day and channel, outcome rates per scenario, fallback rate by day,
    top unmatched phrases, hand-over wait times. ``?days=14``."""
    import asyncio

    from callbot.dashboard import summary

    days = _int_arg(request, "days", 14, 1, 366)
    return json(await asyncio.to_thread(summary, get_store(), days))


@bp.get("/<external_id:str>/recording")
async def recording(_request: Request, external_id: str) -> HTTPResponse:
    """The call's stereo WAV (caller left, bot right), for staff with access to transcripts."""
    from sanic.response import file

    from callbot.settings import get_settings

    with get_store().session() as s:
        rel = s.scalar(select(Conversation.recording).where(Conversation.external_id == external_id[:128]))
    if not rel:
        raise NotFound(f"No recording for conversation {external_id!r}.")
    root = get_settings().recordings_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():  # a stored path never leaves the recordings folder
        raise NotFound(f"The recording of {external_id!r} is no longer on disk (retention ends after "
                       f"{get_settings().voice.recording_retention_days} days).")
    return await file(path, mime_type="audio/wav")


@bp.post("/<external_id:str>/follow-up")
async def close_follow_up(request: Request, external_id: str) -> HTTPResponse:
    body = _body(request)
    note = str(body.get("note") or "").strip()
    if not note:
        raise CallbotError("A closing note is required: say what was found (e.g. 已与客户核实，系家属代办，已重置密码).")
    if len(note) > 2000:
        raise CallbotError("The note is longer than 2000 characters; shorten it.")
    with get_store().session() as s:
        conv = s.scalar(select(Conversation).where(Conversation.external_id == external_id[:128]))
        if conv is None:
            raise NotFound(f"No conversation {external_id!r}.")
        if conv.follow_up is None:
            raise CallbotError(f"Conversation {external_id!r} has no follow-up (its outcome is "
                               f"{conv.outcome.value if conv.outcome else 'not recorded yet'}).")
        if conv.follow_up == "closed":
            raise CallbotError(f"The follow-up of {external_id!r} was already closed by {conv.follow_up_closed_by}.")
        conv.follow_up, conv.follow_up_note = "closed", mask_sensitive(note)
        conv.follow_up_closed_by, conv.follow_up_closed_at = _actor(request), utcnow()
        s.flush()
        return json(_summary(conv, conv.scenario_id and s.scalar(select(Scenario.code).where(Scenario.id == conv.scenario_id))))


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
