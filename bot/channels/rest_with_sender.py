"""Rasa's REST channel, plus the sender id in the message metadata.

The NLU component has no tracker, only the message; with the sender id in the metadata the NLU
service can find the conversation's scenario (set when the outbound call started) by itself, so a
caller never has to repeat it. Same URL as the built-in channel: /webhooks/rest/webhook.
"""

from typing import Any, Optional

from rasa.core.channels.rest import RestInput
from sanic.request import Request


class RestWithSenderInput(RestInput):
    @classmethod
    def name(cls) -> str:
        return "rest"

    def get_metadata(self, request: Request) -> Optional[dict[str, Any]]:
        body = request.json or {}
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return {**metadata, "sender_id": str(body.get("sender") or "")}
