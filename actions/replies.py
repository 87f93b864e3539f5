"""Everything the bot says goes out through here: domain responses rendered, variables filled,
checked by the compliance guard, and recorded on the conversation."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk.executor import CollectingDispatcher

from actions.compliance import ComplianceGuard
from actions.records import ConversationRecorder
from actions.script_engine import Say, fill
from callbot.context import get_store

log = logging.getLogger(__name__)
_guard: ComplianceGuard | None = None


def guard() -> ComplianceGuard:
    global _guard
    if _guard is None:
        _guard = ComplianceGuard(get_store())
    return _guard


def render(say: Say, domain: dict[str, Any], variables: dict[str, Any]) -> str:
    if say.text is not None:
        return say.text
    variants = (domain.get("responses") or {}).get(say.response or "", [])
    if not variants:
        log.error("missing domain response", extra={"fields": {"response": say.response}})
        return ""
    return fill(str(variants[0].get("text", "")), variables)


class Reply:
    """Collects, checks and sends the bot's messages for one action run."""

    def __init__(self, dispatcher: CollectingDispatcher, domain: dict[str, Any], recorder: ConversationRecorder | None,
                 variables: dict[str, Any] | None = None):
        self.dispatcher, self.domain, self.recorder = dispatcher, domain, recorder
        self.variables = variables or {}

    def say(self, say: Say, buttons: list[dict[str, str]] | None = None) -> None:
        text = render(say, self.domain, self.variables)
        if not text:
            return
        blocked = guard().blocks(text)
        if blocked:
            # Never send it: the caller hears a safe line; the incident is logged and recorded.
            log.warning("compliance guard blocked a bot message",
                        extra={"fields": {"rules": [v.rule_id for v in blocked], "matched": [v.matched for v in blocked]}})
            if self.recorder:
                self.recorder.note_compliance(text, [v.rule_id for v in blocked])
            text = render(Say(response="utter_compliance_safe"), self.domain, self.variables) or "抱歉，这个问题请以本公司官方公告为准。"
        if buttons:
            self.dispatcher.utter_message(text=text, buttons=buttons)
        else:
            self.dispatcher.utter_message(text=text)
        if self.recorder:
            self.recorder.bot(text)

    def say_all(self, says: list[Say]) -> None:
        for s in says:
            self.say(s)
