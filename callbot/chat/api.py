"""The widget's REST side: POST /chat/send (the fallback when socket.io cannot connect) and GET /chat/history."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from callbot.chat import relay
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError

bp = Blueprint("chat", url_prefix="/chat")


def _allowed_origin(request: Request) -> str | None:
    from callbot.settings import get_settings

    origin = request.headers.get("origin")
    allowed = get_settings().widget.origins
    if origin and ("*" in allowed or origin in allowed):
        return origin
    return None


@bp.on_response
async def cross_origin(request: Request, response: HTTPResponse) -> None:
    """The widget calls these routes from the firm's pages (another origin): CORS for the allowed ones."""
    origin = _allowed_origin(request)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


@bp.route("/send", methods=["OPTIONS"])
async def send_preflight(request: Request) -> HTTPResponse:
    """CORS preflight of POST /chat/send (a JSON body from another origin)."""
    headers = {"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}
    return HTTPResponse(status=204 if _allowed_origin(request) else 403, headers=headers)


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
