"""How the dialer places a call and learns how it ended: one interface, two drivers.

- ``GatewayDriver``: a real phone call through the SIP gateway's control port (`POST /calls`), to
  ``sip:{phone}@{trunk}``; ended when the gateway says so, with the outcome it or the dialogue recorded.
- ``TextDriver``: no telephony. The call is the Rasa conversation itself: the dialer starts it with
  `EXTERNAL_start_call` (the call id as sender) and the customer's replies arrive on the REST channel under that
  sender (a chat, an SMS bridge, a test); it ends when the conversation records an outcome, as ``no_answer``
  after ``answer_timeout_s`` with no reply, or as ``dropped`` (retried) when a customer who replied leaves the
  conversation unfinished for ``abandoned_after_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from campaigns.service import Campaigns, Claim
from knowledge_base.errors import CallbotError


class CallDriver(Protocol):
    name: str

    def place(self, claim: Claim) -> None:
        ...

    def outcome(self, claim: Claim) -> str | None:
        """The call's outcome once it has ended; None while it goes on."""
        ...


@dataclass
class GatewayDriver:
    control_url: str
    trunk: str  # host[:port] the gateway dials numbers at
    campaigns: Campaigns
    # A gateway unreachable this long has lost its calls (killed, host gone): each is settled from the record, or as
    # ``dropped`` (retried while attempts remain), so its slot under the concurrency cap is free again.
    lost_after_s: float = 90.0
    name: str = "gateway"
    _unreachable_since: dict[str, float] = field(default_factory=dict)

    def place(self, claim: Claim) -> None:
        try:
            response = httpx.post(self.control_url + "/calls", json={
                "uri": f"sip:{claim.phone}@{self.trunk}", "scenario": claim.scenario, "customer_name": claim.customer_name,
                "variables": claim.variables, "call_id": claim.call_id}, timeout=10)
        except httpx.HTTPError as exc:
            raise CallbotError(f"the gateway at {self.control_url} does not answer ({exc.__class__.__name__})") from exc
        if response.status_code != 202:
            raise CallbotError(f"the gateway refused the call: {response.text[:200]}")

    def outcome(self, claim: Claim) -> str | None:
        try:
            found = httpx.get(f"{self.control_url}/calls/{claim.call_id}", timeout=10)
        except httpx.HTTPError:
            # Restarting: ask again; gone for good: the call is lost, whatever the phone network did with it.
            since = self._unreachable_since.setdefault(claim.call_id, time.monotonic())
            if time.monotonic() - since < self.lost_after_s:
                return None
            self._unreachable_since.pop(claim.call_id, None)
            return self.campaigns.recorded_outcome(claim.call_id) or "dropped"
        self._unreachable_since.pop(claim.call_id, None)
        if found.status_code == 404:  # the gateway restarted and forgot the call: the record decides
            return self.campaigns.recorded_outcome(claim.call_id) or "dropped"
        body = found.json()
        if body.get("phase") != "ended":
            return None
        return body.get("outcome") or self.campaigns.recorded_outcome(claim.call_id) or "dropped"


@dataclass
class TextDriver:
    rasa_url: str
    campaigns: Campaigns
    answer_timeout_s: float = 600.0
    abandoned_after_s: float = 3600.0
    name: str = "text"
    _started: dict[str, float] = field(default_factory=dict)

    def place(self, claim: Claim) -> None:
        body = {"name": "EXTERNAL_start_call", "entities": {"scenario": claim.scenario, "customer_name": claim.customer_name,
                                                            "variables": claim.variables}}
        try:
            response = httpx.post(f"{self.rasa_url}/conversations/{claim.call_id}/trigger_intent?output_channel=latest",
                                  json=body, timeout=30)
        except httpx.HTTPError as exc:
            raise CallbotError(f"Rasa at {self.rasa_url} does not answer ({exc.__class__.__name__})") from exc
        if response.status_code != 200:
            raise CallbotError(f"Rasa refused to start the call: {response.text[:200]}")
        self._started[claim.call_id] = time.monotonic()

    def outcome(self, claim: Claim) -> str | None:
        recorded, replied = self.campaigns.call_progress(claim.call_id)
        if recorded is not None:
            return recorded
        started = self._started.setdefault(claim.call_id, time.monotonic())  # a restart gives it a fresh wait
        waited = time.monotonic() - started
        if not replied:  # the timeout is for a customer who never answers, not for a long conversation
            return "no_answer" if waited > self.answer_timeout_s else None
        return "dropped" if waited > self.abandoned_after_s else None  # answered, then gone: retried like a dropped line
