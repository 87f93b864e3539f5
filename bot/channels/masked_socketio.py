"""Rasa's socket.io channel (the chat widget), with personal numbers masked before Rasa sees the message.

As bot/channels/rest_with_sender.py: Rasa's tracker store keeps every user message, so a mobile, ID or
bank-card number a customer types is masked here (callbot.pii), at the channel boundary. Same events and URL
as the built-in channel (credentials.yml keeps its options).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.socketio import SocketIOInput
from sanic import Blueprint

from callbot.pii import mask_sensitive


class MaskedSocketIOInput(SocketIOInput):
    @classmethod
    def name(cls) -> str:
        return "socketio"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        async def masked(message: UserMessage) -> None:
            message.text = mask_sensitive(message.text) if message.text else message.text
            await on_new_message(message)

        return super().blueprint(masked)
