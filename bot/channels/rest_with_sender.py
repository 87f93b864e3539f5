"""Rasa's REST channel, plus the sender id in the message metadata and a safe reply when nothing came back.

- The NLU component has no tracker, only the message; with the sender id in the metadata the NLU
  service can find the conversation's scenario (set when the outbound call started) by itself.
- If the action server is down or fails, Rasa logs the error and produces no message; the caller
  would hear silence. Here an empty answer to a real message becomes an apology and a hand-over offer.
- Mobile, ID and bank-card numbers in the message are masked before Rasa sees it (callbot.pii): Rasa's
  tracker store keeps every user message, and the NLU does not need the digits.
- A turn sent with ``metadata.turn_id`` is processed once: a channel that resends it (no answer, a 502 after an
  instance died mid-turn) gets the first processing's replies (bot/channels/turn_ledger.py).

Same URL as the built-in channel: /webhooks/rest/webhook.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Optional

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint
from sanic.request import Request

from bot import action_validation
from bot.channels.turn_ledger import ledger_from_env, process_once, turn_key
from callbot.pii import mask_sensitive

action_validation.install()  # this module is loaded when Rasa's server starts: see bot/action_validation.py

# Rasa's process cannot read the knowledge base; this one line is the last-resort reply.
SAFE_REPLY = "抱歉，系统暂时无法处理您的请求，需要为您转接人工客服吗？"


_ledger: Optional[Any] = None


def ledger() -> Any:
    global _ledger
    if _ledger is None:
        _ledger = ledger_from_env()
    return _ledger


class RestWithSenderInput(RestInput):
    @classmethod
    def name(cls) -> str:
        return "rest"

    def get_metadata(self, request: Request) -> Optional[dict[str, Any]]:
        body = request.json or {}
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return {**metadata, "sender_id": str(body.get("sender") or "")}

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        async def guarded(message: UserMessage) -> None:
            message.text = mask_sensitive(message.text) if message.text else message.text
            collector = message.output_channel
            if not isinstance(collector, CollectingOutputChannel):
                await on_new_message(message)  # a streamed reply: nothing to store or replay
                return
            before = len(collector.messages)

            async def turn() -> list[dict[str, Any]]:
                await on_new_message(message)
                if len(collector.messages) == before and (message.text or "").strip() and not (message.text or "").startswith("/"):
                    await collector.send_text_message(message.sender_id, SAFE_REPLY)
                return list(collector.messages[before:])

            key = turn_key(message.sender_id or "", (message.metadata or {}).get("turn_id"))
            if key is None:
                await turn()
                return
            replies = await process_once(ledger(), key, turn)
            if len(collector.messages) == before:  # a resend: the first processing's replies, the tracker untouched
                collector.messages.extend(replies)

        return super().blueprint(guarded)
