"""Sending a caller's turn to Rasa's REST channel so that it is processed once, resent when it got no answer.

Every turn carries a fresh ``metadata.turn_id``; a connection error, a time-out or a 502/503/504 (nginx in front of
an instance that died mid-turn) resends the same turn, and the channel's ledger (bot/channels/turn_ledger.py)
answers a resend of a processed turn with the first replies instead of processing it again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

RESEND_AFTER_S = (0.3, 1.0, 2.0)  # three resends, then the caller of send_turn sees the failure
RESENDABLE = frozenset({502, 503, 504})


def with_turn_id(body: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(body.get("metadata") or {})
    metadata.setdefault("turn_id", uuid.uuid4().hex)
    return {**body, "metadata": metadata}


def send_turn(url: str, body: dict[str, Any], timeout: float) -> httpx.Response:
    """Resends stop once ``timeout`` has passed in all: a hung Rasa must not keep a caller waiting four time-outs."""
    body = with_turn_id(body)
    deadline = time.monotonic() + timeout
    for pause in (*RESEND_AFTER_S, None):
        if pause is not None and time.monotonic() + pause > deadline:
            pause = None  # this attempt is the last
        try:
            response = httpx.post(url, json=body, timeout=timeout)
            if response.status_code not in RESENDABLE or pause is None:
                return response
        except httpx.TransportError:
            if pause is None:
                raise
        time.sleep(pause)
    raise AssertionError("unreachable")


async def send_turn_async(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    body = with_turn_id(body)
    for pause in (*RESEND_AFTER_S, None):
        try:
            response = await client.post(url, json=body)
            if response.status_code not in RESENDABLE or pause is None:
                return response
        except httpx.TransportError:
            if pause is None:
                raise
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")
