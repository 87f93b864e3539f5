"""The widget's REST side: POST /chat/send (the fallback when socket.io cannot connect) and GET /chat/history."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from callbot.chat import relay
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError

bp = Blueprint("chat", url_prefix="/chat")


@bp.post("/send")
async def send(request: Request) -> HTTPResponse:
    """``{"sender": SESSION_ID, "message": "…"}`` → ``{"messages": [bot_uttered payloads]}``; 503 when Rasa is down."""
    body = _body(request)
    session_id = relay.check_session_id(body.get("sender") or body.get("session_id"))
    message = body.get("message")
    if not isinstance(message, str):
        raise CallbotError("message must be a string.")
    messages = await relay.handle(session_id, message)
    down = any(m.get("error") == "dialogue_manager_unavailable" for m in messages)
    return json({"messages": messages, **({"error": "dialogue manager unavailable"} if down else {})}, status=503 if down else 200)


@bp.get("/history")
async def history(request: Request) -> HTTPResponse:
    """``?session_id=…[&after=SEQ]``: the conversation so far (customer, bot and agent lines) and the hand-over state."""
    import asyncio

    session_id = relay.check_session_id(request.args.get("session_id"))
    try:
        after = max(0, int(request.args.get("after", 0)))
    except ValueError:
        raise CallbotError("after must be an integer (the last seq the widget has).") from None
    return json(await asyncio.to_thread(relay.history, session_id, after))
