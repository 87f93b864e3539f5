"""Rasa's REST channel, plus the sender id in the message metadata and a safe reply when nothing came back.

- The NLU component has no tracker, only the message; with the sender id in the metadata the NLU
  service can find the conversation's scenario (set when the outbound call started) by itself.
- If the action server is down or fails, Rasa logs the error and produces no message; the caller
  would hear silence. Here an empty answer to a real message becomes an apology and a hand-over offer.
- Mobile, ID and bank-card numbers in the message are masked before Rasa sees it (callbot.pii): Rasa's
  tracker store keeps every user message, and the NLU does not need the digits.

Same URL as the built-in channel: /webhooks/rest/webhook.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Optional

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint
from sanic.request import Request

from bot import action_validation
from callbot.pii import mask_sensitive

action_validation.install()  # this module is loaded when Rasa's server starts: see bot/action_validation.py

# Rasa's process cannot read the knowledge base; this one line is the last-resort reply.
SAFE_REPLY = "抱歉，系统暂时无法处理您的请求，需要为您转接人工客服吗？"


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
            before = len(collector.messages) if isinstance(collector, CollectingOutputChannel) else 0
            await on_new_message(message)
            if (isinstance(collector, CollectingOutputChannel) and len(collector.messages) == before
                    and (message.text or "").strip() and not (message.text or "").startswith("/")):
                await collector.send_text_message(message.sender_id, SAFE_REPLY)

        return super().blueprint(guarded)
