"""What the content actions want to say, collected — not sent.

Content actions (script turns, FAQ answers, hand-over …) put their messages in the ``pending_replies``
slot and the outcome they reached in ``pending_outcome``. Rasa's rules then run
``action_check_compliance`` (the only action that sends bot text) and ``action_record_outcome``.
"""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk.events import FollowupAction, SlotSet

from actions.script_engine import Say, fill

log = logging.getLogger(__name__)

PENDING_REPLIES = "pending_replies"
PENDING_OUTCOME = "pending_outcome"


def render(say: Say, domain: dict[str, Any], variables: dict[str, Any]) -> str:
    if say.text is not None:
        return say.text
    variants = (domain.get("responses") or {}).get(say.response or "", [])
    if not variants:
        log.error("missing domain response", extra={"fields": {"response": say.response}})
        return ""
    return fill(str(variants[0].get("text", "")), variables)


class Outbox:
    """Collects one action's messages (text with optional buttons, or a custom payload for the channel)
    and the outcome, as slot events for the check and record actions that follow."""

    def __init__(self, domain: dict[str, Any], variables: dict[str, Any] | None = None):
        self.domain = domain
        self.variables = variables or {}
        self.messages: list[dict[str, Any]] = []
        self.outcome: dict[str, Any] | None = None

    def say(self, say: Say, buttons: list[dict[str, str]] | None = None) -> None:
        text = render(say, self.domain, self.variables)
        if text:
            self.messages.append({"text": text, **({"buttons": buttons} if buttons else {})})

    def say_all(self, says: list[Say]) -> None:
        for s in says:
            self.say(s)

    def custom(self, payload: dict[str, Any]) -> None:
        self.messages.append({"custom": payload})

    def finish(self, outcome: str, detail: dict[str, Any] | None = None, handed_over: bool = False) -> None:
        self.outcome = {"outcome": outcome, "detail": detail or {}, "handed_over": handed_over}

    def events(self) -> list[dict[str, Any]]:
        events = [SlotSet(PENDING_REPLIES, self.messages)]
        if self.outcome:
            events.append(SlotSet(PENDING_OUTCOME, self.outcome))
        # The rules name the same next action; saying it here spares Rasa a policy prediction per turn.
        events.append(FollowupAction("action_check_compliance"))
        return events
