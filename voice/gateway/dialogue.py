"""The gateway's side of a Rasa conversation: the call id is the sender, the caller's words go in as text.

Every bot line that comes back is what the actions sent after the compliance check (the same REST channel
as chat). After each turn the tracker's slots say whether the call is over: an outbound call once its
outcome is recorded (``call_mode=ended``), an inbound one when this turn recorded an outcome (goodbye,
hand-over).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from callbot.turns import send_turn
from knowledge_base.errors import CallbotError


class DialogueUnavailable(CallbotError):
    pass


@dataclass(frozen=True)
class BotTurn:
    lines: list[str]
    handoff: bool = False
    ended: bool = False
    outcome: str | None = None
    ms: float = 0.0


@dataclass
class DialogueLink:
    rasa_url: str
    timeout_s: float = 15.0
    _outcomes: dict[str, str | None] = field(default_factory=dict)

    def _post(self, path: str, body: dict[str, Any], once: bool = False) -> Any:
        try:
            # A caller's turn is resent, with its turn id, if Rasa gave no answer (callbot.turns).
            response = (send_turn(self.rasa_url + path, body, self.timeout_s) if once
                        else httpx.post(self.rasa_url + path, json=body, timeout=self.timeout_s))
        except httpx.HTTPError as exc:
            raise DialogueUnavailable(f"Rasa at {self.rasa_url} did not answer ({exc.__class__.__name__}); "
                                      "is it running (`callbot status`)?") from exc
        if response.status_code != 200:
            raise DialogueUnavailable(f"Rasa answered {response.status_code} to {path}: {response.text[:200]}")
        return response.json()

    def _slots(self, sender: str) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.rasa_url}/conversations/{sender}/tracker", params={"include_events": "NONE"},
                                 timeout=self.timeout_s)
            return dict(response.json().get("slots") or {}) if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    def _turn(self, sender: str, messages: list[dict[str, Any]], started: float) -> BotTurn:
        lines = [str(m["text"]) for m in messages if m.get("text")]
        handoff = any(bool((m.get("custom") or {}).get("handoff")) for m in messages)
        slots = self._slots(sender)
        outcome = slots.get("outcome")
        ended = slots.get("call_mode") == "ended" or (outcome is not None and outcome != self._outcomes.get(sender))
        self._outcomes[sender] = outcome
        return BotTurn(lines, handoff, ended or handoff, outcome, (time.perf_counter() - started) * 1000)

    def start_outbound(self, sender: str, scenario: str, customer_name: str, variables: dict[str, Any]) -> BotTurn:
        started = time.perf_counter()
        body = {"name": "EXTERNAL_start_call",
                "entities": {"scenario": scenario, "customer_name": customer_name, "variables": variables}}
        result = self._post(f"/conversations/{sender}/trigger_intent?output_channel=latest", body)
        self._outcomes[sender] = None
        return self._turn(sender, list(result.get("messages") or []), started)

    def say(self, sender: str, text: str) -> BotTurn:
        started = time.perf_counter()
        self._outcomes.setdefault(sender, None)
        messages = self._post("/webhooks/rest/webhook", {"sender": sender, "message": text}, once=True)
        return self._turn(sender, list(messages or []), started)

    def forget(self, sender: str) -> None:
        self._outcomes.pop(sender, None)
