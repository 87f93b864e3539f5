"""One customer message in, the customer's replies out: to Rasa's REST channel, or to the agent desk while a
person has the conversation (the bot stays silent then). Both the socket.io channel and the REST fallback
use this, so they behave the same.

Replies use Rasa's socket.io shape (``bot_uttered``): ``{"text", "quick_replies": [{"title", "payload"}]}``,
custom payloads as they are; hand-over notices are ``{"handoff": {"status", "agent_name"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from callbot.context import get_store
from callbot.desk.service import AgentDesk
from callbot.pii import mask_sensitive
from callbot.settings import get_settings
from callbot.turns import send_turn_async
from knowledge_base.errors import CallbotError

log = logging.getLogger("callbot.chat")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_MESSAGE = 5000
# The dialogue manager is down: the one line this process can still say (the KB is Rasa's to voice).
UNAVAILABLE = "系统暂时繁忙，请稍后再试，或拨打客服热线转人工。"


def check_session_id(value: Any) -> str:
    session_id = str(value or "")
    if not SESSION_ID.match(session_id):
        raise CallbotError("session_id must be 8–64 characters of letters, digits, '-' or '_' (the widget makes one).")
    return session_id


def desk() -> AgentDesk:
    return AgentDesk(get_store())


def from_rasa(message: dict[str, Any]) -> dict[str, Any]:
    """Rasa's REST reply → the socket.io channel's bot_uttered payload (as Rasa's SocketIOOutput shapes it)."""
    out: dict[str, Any] = {}
    if message.get("text"):
        out["text"] = message["text"]
    if message.get("buttons"):
        out["buttons"] = message["buttons"]  # as Rasa's REST channel has them, for REST clients of /chat/send
        out["quick_replies"] = [{"content_type": "text", "title": b.get("title", ""), "payload": b.get("payload", "")}
                                for b in message["buttons"]]
    if message.get("image"):
        out["attachment"] = {"type": "image", "payload": {"src": message["image"]}}
    if isinstance(message.get("custom"), dict):
        out.update(message["custom"])
    return out


async def handle(session_id: str, text: str) -> list[dict[str, Any]]:
    """What the customer sees in answer to ``text``."""
    text = (text or "")[:MAX_MESSAGE]
    open_handover = await asyncio.to_thread(desk().open_for, session_id)
    if open_handover is not None:
        if text.startswith("/"):
            return []  # the widget's own payloads (/greet on reload) are not for the agent
        await asyncio.to_thread(desk().customer_said, session_id, text)
        return []
    url = get_settings().url("rasa") + "/webhooks/rest/webhook"
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            resp = await send_turn_async(client, url, {"sender": session_id, "message": text, "metadata": {"channel": "chat"}})
            resp.raise_for_status()
            messages = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("chat relay: dialogue manager unavailable", extra={"error": type(exc).__name__, "session": session_id[:8]})
        return [{"text": UNAVAILABLE, "error": "dialogue_manager_unavailable"}]
    replies = [from_rasa(m) for m in messages if isinstance(m, dict)]
    handoff = next((r for r in replies if r.get("handoff")), None)  # the action's {"handoff": true, "reason": …}
    if handoff:
        reason = handoff.get("reason") or "request_human"
        ticket = await asyncio.to_thread(desk().request, session_id, str(reason))
        replies = [r for r in replies if not r.get("handoff")]
        replies.append({"handoff": {"status": ticket["status"], "id": ticket["id"]}})
        log.info("chat handed over", extra={"session": session_id[:8], "handover": ticket["id"]})
    return replies


def history(session_id: str, after: int = 0) -> dict[str, Any]:
    """The conversation so far for the widget after a reload: user, bot and agent lines, and the hand-over state."""
    from sqlalchemy import select

    from knowledge_base.models import Conversation, ConversationTurn

    with get_store().session() as s:
        conv = s.scalar(select(Conversation).where(Conversation.external_id == session_id))
        turns = [] if conv is None else s.scalars(select(ConversationTurn).where(
            ConversationTurn.conversation_id == conv.id, ConversationTurn.seq > after,
            ConversationTurn.speaker.in_(("user", "bot", "agent"))).order_by(ConversationTurn.seq)).all()
        lines = [{"seq": t.seq, "speaker": t.speaker, "text": mask_sensitive(t.text)} for t in turns]
    return {"session_id": session_id, "turns": lines, "handover": desk().open_for(session_id)}
