"""The widget's socket.io endpoint (``/socket.io/``), speaking Rasa's socket.io channel protocol as rasa-webchat
does: ``session_request`` {session_id} → ``session_confirm``; ``user_uttered`` {message, session_id} →
``bot_uttered`` per reply. Agent replies from the desk are pushed to the session's room.

With several web workers (the scale profile) pushes travel through Redis to whichever worker holds the
customer's socket; the widget's history poll during a hand-over is a second path.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from sanic import Sanic

from callbot.chat import relay
from knowledge_base.errors import CallbotError

log = logging.getLogger("callbot.chat")
_server: socketio.AsyncServer | None = None


def attach(app: Sanic) -> socketio.AsyncServer:
    global _server
    from callbot.settings import get_settings

    # The widget runs on the firm's own pages: their origins (widget.origins) may open the socket.
    settings = get_settings()
    origins = settings.widget.origins
    # Several web workers (the scale profile): emits go through Redis, so an agent's reply posted to one worker
    # reaches the customer's socket on another.
    manager = (socketio.AsyncRedisManager(f"redis://{settings.host}:{settings.ports.redis}/0", channel="callbot-widget")
               if settings.profile == "scale" else None)
    sio = socketio.AsyncServer(async_mode="sanic", cors_allowed_origins="*" if "*" in origins else origins,
                               max_http_buffer_size=64 * 1024, client_manager=manager)
    sio.attach(app)
    sessions: dict[str, str] = {}  # socket id → session id

    @sio.on("session_request")
    async def session_request(sid: str, data: Any) -> None:
        try:
            session_id = relay.check_session_id((data or {}).get("session_id") if isinstance(data, dict) else None)
        except CallbotError as exc:
            await sio.emit("error_message", {"error": str(exc)}, to=sid)
            return
        sessions[sid] = session_id
        await sio.enter_room(sid, session_id)
        await sio.emit("session_confirm", session_id, to=sid)

    @sio.on("user_uttered")
    async def user_uttered(sid: str, data: Any) -> None:
        session_id = sessions.get(sid)
        message = data.get("message") if isinstance(data, dict) else None
        if session_id is None or not isinstance(message, str):
            await sio.emit("error_message", {"error": "send session_request first, then {\"message\": \"…\"}"}, to=sid)
            return
        for reply in await relay.handle(session_id, message):
            await sio.emit("bot_uttered", reply, room=session_id)

    @sio.event
    async def disconnect(sid: str, *_args: Any) -> None:
        sessions.pop(sid, None)

    _server = sio
    return sio


async def push(session_id: str, payload: dict[str, Any]) -> None:
    """Send ``payload`` (as bot_uttered) to the customer's widget, if it is connected to this process."""
    if _server is not None:
        await _server.emit("bot_uttered", payload, room=session_id)
