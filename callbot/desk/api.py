"""The agent desk's JSON API (role agent or admin): the queue, pick, transcript, reply, close."""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from callbot.auth.guard import actor
from callbot.chat import socket_channel
from callbot.chat.relay import desk
from callbot.context import get_store
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError

bp = Blueprint("desk", url_prefix="/desk")


@bp.get("/handovers")
async def queue(request: Request) -> HTTPResponse:
    """Waiting and active hand-overs, oldest first; ``?closed=N`` adds the last N closed ones."""
    try:
        closed = max(0, min(200, int(request.args.get("closed", 0))))
    except ValueError:
        raise CallbotError("closed must be an integer.") from None
    return json(await asyncio.to_thread(desk().queue, closed))


@bp.post("/handovers/<handover_id:int>/pick")
async def pick(request: Request, handover_id: int) -> HTTPResponse:
    """Take a waiting chat; the customer is told a person has joined."""
    h = await asyncio.to_thread(desk().pick, handover_id, actor(request))
    name = request.ctx.principal.display_name or actor(request)
    await socket_channel.push(h["session_id"], {"handoff": {"status": "active", "agent_name": name}})
    return json(h)


@bp.get("/handovers/<handover_id:int>/transcript")
async def transcript(request: Request, handover_id: int) -> HTTPResponse:
    """The conversation so far (bot turns with intent and score); ``?after=SEQ`` for new lines only."""
    try:
        after = max(0, int(request.args.get("after", 0)))
    except ValueError:
        raise CallbotError("after must be an integer.") from None
    return json(await asyncio.to_thread(desk().transcript, handover_id, after))


@bp.post("/handovers/<handover_id:int>/reply")
async def reply(request: Request, handover_id: int) -> HTTPResponse:
    """``{"text": "…"}``: stored in the transcript and pushed to the customer's widget at once."""
    body = _body(request)
    line = await asyncio.to_thread(desk().reply, handover_id, actor(request), str(body.get("text", "")))
    await socket_channel.push(line["session_id"], {"text": line["text"], "agent": {"name": line["agent_name"]}, "seq": line["seq"]})
    line["compliance"] = await asyncio.to_thread(_check_agent_line, line)
    return json(line, status=201)


def _check_agent_line(line: dict[str, Any]) -> list[dict[str, Any]]:
    """The agent's words through the same compliance guard as the bot's: hits are flagged on the conversation for
    review and returned, so the desk can warn the agent at once."""
    from nlu.compliance.service import get_guard

    hits = get_guard(get_store()).verdict(line["text"]).as_dict()["hits"]
    if hits:
        desk().flag_compliance(line["session_id"], line["seq"], hits)
    return hits


@bp.post("/handovers/<handover_id:int>/close")
async def close(request: Request, handover_id: int) -> HTTPResponse:
    """``{"outcome": "resolved|callback|unresolved|complaint", "note": "…"}``; the bot answers the customer again."""
    body = _body(request)
    h = await asyncio.to_thread(desk().close, handover_id, actor(request), str(body.get("outcome", "")), str(body.get("note", "")))
    await socket_channel.push(h["session_id"], {"handoff": {"status": "closed"}})
    return json(h)
