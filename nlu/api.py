"""NLU HTTP API (Sanic blueprint): POST /nlu/parse, GET /nlu/status."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from knowledge_base.errors import CallbotError
from nlu.service import get_matcher

bp = Blueprint("nlu", url_prefix="/nlu")
# One thread does all encoding: libgomp gives every calling thread its own OpenMP team, so a rotating
# default executor multiplies torch's spinning worker threads (and two parses would fight for 2 cores anyway).
ENCODING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-encode")


def _one_torch_thread() -> None:
    """A second OpenMP team of more than one thread (default: one per core) doubled every later parse on
    the encoding thread, even once idle (10 → 20 ms measured); a one-thread team costs parses nothing."""
    import torch

    torch.set_num_threads(1)


# Generation and mining (POST /kb/intents/{id}/expand, /kb/mine) take seconds: their own single thread,
# so they queue behind each other and parses never wait behind one; one torch thread there, see above.
GENERATION = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-generate", initializer=_one_torch_thread)
MAX_BODY_TEXT = 10_000
_served = {"parses": 0}  # since this process started; shown by /nlu/status


@bp.post("/parse")
async def parse(request: Request) -> HTTPResponse:
    try:
        body = request.json
    except Exception:
        raise CallbotError('Request body is not valid JSON; send {"text": "...", "scenario": "..."}.') from None
    if not isinstance(body, dict):
        raise CallbotError('Request body must be a JSON object like {"text": "...", "scenario": "..."}.')
    text = body.get("text")
    scenario = body.get("scenario") or None
    if scenario is not None and not isinstance(scenario, str):
        raise CallbotError("scenario must be a string (a scenario code) or null.")
    try:
        k = max(1, min(int(body.get("k", 5)), 50))
    except (TypeError, ValueError):
        raise CallbotError("k must be an integer between 1 and 50.") from None
    sender = body.get("sender_id")
    if scenario is None and isinstance(sender, str) and sender:
        scenario = conversation_scenario(sender)
    if isinstance(text, str) and len(text) > MAX_BODY_TEXT:
        text = text[:MAX_BODY_TEXT]
    matcher = get_matcher()
    # Encoding is CPU work: keep the event loop free for other requests.
    result = await asyncio.get_running_loop().run_in_executor(ENCODING, matcher.match, text, scenario, k)
    _served["parses"] += 1
    return json(result.as_dict())


def conversation_scenario(sender_id: str) -> str | None:
    """The scenario of an outbound call in progress for this sender, if any (a scenario deleted during the call is
    none: the reply is matched like a chat turn, and the call's script action ends the call)."""
    from sqlalchemy import select

    from callbot.context import get_store
    from knowledge_base.models import Conversation, Scenario

    with get_store().session() as s:
        return s.scalar(select(Scenario.code).join(Conversation, Conversation.scenario_id == Scenario.id)
                        .where(Conversation.external_id == sender_id[:128], Conversation.ended_at.is_(None), Scenario.live()))


@bp.get("/status")
async def status(_request: Request) -> HTTPResponse:
    m = get_matcher()
    return json({"model": m.encoder.name, "kb_version": m.kb_version, "scenarios": m.scenarios(),
                 "thresholds": vars(m.thresholds), "last_refresh": m.last_refresh, "parses": _served["parses"],
                 "intent_head": {"weight": m.intent_head_weight, "ready": m.head_ready.is_set()},
                 "lexical_head": {"weight": m.lexical_head_weight}})
