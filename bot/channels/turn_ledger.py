"""Each caller turn is processed once, even when the channel sends it again.

A channel (the SIP gateway, the chat relay, the text dialer) gives every turn a ``turn_id`` in the message metadata
and resends the same turn when it got no answer: a Rasa instance killed while the turn was in flight gives a 502
from nginx, which does not resend a POST itself (it cannot know whether the turn was processed). The ledger makes
the resend safe:

- the first instance to see a turn claims it with a short lease that it renews while it works;
- a resend of a finished turn gets the stored replies, and the tracker is not touched again;
- a resend while the turn is still being processed waits for it; if the holder died, its lease runs out and the
  resend processes the turn itself.

The ledger lives in Redis when ``CALLBOT_TURN_LEDGER_URL`` names one (the scale profile: every Rasa instance sees
it), otherwise in the process (one Rasa instance: a resend after a client time-out is still answered once).
Plain Python with no Rasa import, so the main environment tests it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

LEASE_S = 3.0  # a holder that stops renewing (killed) frees the turn this long after its last renewal
KEEP_S = 3600.0  # finished turns are remembered this long: longer than any channel retries
WAIT_S = 20.0  # how long a resend waits for a holder that keeps renewing before processing anyway
POLL_S = 0.1
MAX_ID = 128


def turn_key(sender: str, turn_id: Any) -> Optional[str]:
    """The ledger key of a turn, or None when the message carries no usable turn id (old clients: no ledger)."""
    if not isinstance(turn_id, str) or not turn_id.strip() or len(turn_id) > MAX_ID:
        return None
    return f"callbot:turn:{sender[:MAX_ID]}:{turn_id.strip()}"


@dataclass
class Claim:
    """What to do with a turn: ``replay`` the stored ``messages``, or ``process`` it (and call finish/abandon)."""

    action: str
    messages: list[dict[str, Any]] = field(default_factory=list)


class MemoryTurnLedger:
    def __init__(self, lease_s: float = LEASE_S, keep_s: float = KEEP_S, wait_s: float = WAIT_S) -> None:
        self.lease_s, self.keep_s, self.wait_s = lease_s, keep_s, wait_s
        self._turns: dict[str, tuple[str, float, list[dict[str, Any]]]] = {}  # key → (state, expires, messages)
        self._finished = 0

    def _live(self, key: str) -> Optional[tuple[str, float, list[dict[str, Any]]]]:
        entry = self._turns.get(key)
        if entry is not None and entry[1] < time.monotonic():
            del self._turns[key]
            return None
        return entry

    async def claim(self, key: str) -> Claim:
        deadline = time.monotonic() + self.wait_s
        while True:
            entry = self._live(key)
            if entry is not None and entry[0] == "done":  # first: a turn finished at the deadline is replayed
                return Claim("replay", entry[2])
            if entry is None or time.monotonic() > deadline:
                self._turns[key] = ("processing", time.monotonic() + self.lease_s, [])
                return Claim("process")
            await asyncio.sleep(POLL_S)

    async def renew(self, key: str) -> None:
        entry = self._turns.get(key)
        if entry is not None and entry[0] == "processing":
            self._turns[key] = ("processing", time.monotonic() + self.lease_s, [])

    async def finish(self, key: str, messages: list[dict[str, Any]]) -> None:
        self._finished += 1
        if self._finished % 256 == 0:  # sweep now and then, not on every turn: the map holds an hour of turns
            self._forget_expired()
        self._turns[key] = ("done", time.monotonic() + self.keep_s, messages)

    async def abandon(self, key: str) -> None:
        self._turns.pop(key, None)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for k in [k for k, v in self._turns.items() if v[1] < now]:
            del self._turns[k]


# Returns the finished entry, or claims the turn (state processing, a fresh lease) and returns nil.
TAKE_OVER = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['state'] == 'done' then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""


class RedisTurnLedger:
    def __init__(self, url: str, lease_s: float = LEASE_S, keep_s: float = KEEP_S, wait_s: float = WAIT_S) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(url)
        self.lease_s, self.keep_s, self.wait_s = lease_s, keep_s, wait_s

    async def claim(self, key: str) -> Claim:
        deadline = time.monotonic() + self.wait_s
        while True:
            if time.monotonic() > deadline:
                # Take over in one step: a holder that finishes between a read and a write here must be replayed,
                # not overwritten and processed a second time.
                done = await self.client.eval(TAKE_OVER, 1, key, json.dumps({"state": "processing"}), int(self.lease_s * 1000))
                if done is not None:
                    return Claim("replay", list(json.loads(done).get("messages") or []))
                return Claim("process")
            if await self.client.set(key, json.dumps({"state": "processing"}), px=int(self.lease_s * 1000), nx=True):
                return Claim("process")
            raw = await self.client.get(key)
            if raw is not None:
                entry = json.loads(raw)
                if entry.get("state") == "done":
                    return Claim("replay", list(entry.get("messages") or []))
            await asyncio.sleep(POLL_S)

    async def renew(self, key: str) -> None:
        await self.client.pexpire(key, int(self.lease_s * 1000))

    async def finish(self, key: str, messages: list[dict[str, Any]]) -> None:
        await self.client.set(key, json.dumps({"state": "done", "messages": messages}, ensure_ascii=False),
                              px=int(self.keep_s * 1000))

    async def abandon(self, key: str) -> None:
        await self.client.delete(key)


def ledger_from_env() -> Any:
    url = os.environ.get("CALLBOT_TURN_LEDGER_URL", "").strip()
    return RedisTurnLedger(url) if url else MemoryTurnLedger()


async def process_once(ledger: Any, key: str, work: Any) -> list[dict[str, Any]]:
    """Run ``work()`` (a coroutine function returning the turn's bot messages) unless the turn was already
    processed, keeping the lease alive while it runs; returns the messages either way."""
    claim = await ledger.claim(key)
    if claim.action == "replay":
        return claim.messages

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(ledger.lease_s / 3)
            await ledger.renew(key)

    beat = asyncio.ensure_future(heartbeat())
    try:
        messages = await work()
    except BaseException:
        beat.cancel()
        await ledger.abandon(key)  # a resend processes it at once instead of waiting out the lease
        raise
    beat.cancel()
    await ledger.finish(key, messages)
    return messages
