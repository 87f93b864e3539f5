"""``action_check_compliance``: the one place bot text leaves the action server.

Runs after every content action. Each pending message passes the compliance guard (nlu/compliance: the knowledge
base's rule lexicon and the classifier that judges paraphrase, negation and quotation); a ``block`` hit is never
sent — the caller gets ``utter_compliance_safe`` and the conversation records the rule ids. What is sent is
written to the transcript.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.records import ConversationRecorder
from actions.replies import PENDING_REPLIES, render
from actions.script_engine import Say
from callbot.context import get_store
from nlu.compliance.guard import ComplianceGuard

log = logging.getLogger(__name__)
SAFE_FALLBACK = "抱歉，这个问题请以本公司官方公告为准。"  # only if the domain lost utter_compliance_safe
_guard: ComplianceGuard | None = None


def guard() -> ComplianceGuard:
    global _guard
    if _guard is None:
        from nlu.compliance.service import get_guard

        try:
            _guard = get_guard(get_store())
        except Exception as exc:  # noqa: BLE001 - no encoder in the cache: the lexicon still guards every reply
            log.error("compliance classifier unavailable; the rule lexicon alone guards replies",
                      extra={"fields": {"error": str(exc)[:200]}})
            _guard = get_guard(get_store(), lexicon_only=True)
    return _guard


# In the action server (`python -m rasa_sdk`), load the guard (encoder and classifier) while it starts, not on a
# caller's first reply; importing the module elsewhere (tests, tools) loads nothing.
if Path(sys.argv[0]).parent.name == "rasa_sdk":
    # One torch thread: the action server's only torch work is this guard, and Rasa, the web app's encoder and the
    # other workers share the same cores (two threads here halved a 2-core box's turns per second under load).
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=lambda: guard(), name="compliance-warm-up", daemon=True).start()


def channel_of(tracker: Tracker) -> str:
    return "outbound" if tracker.get_slot("call_mode") in ("outbound", "ended") else "chat"


class ActionCheckCompliance(Action):
    def name(self) -> str:
        return "action_check_compliance"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        pending = tracker.get_slot(PENDING_REPLIES) or []
        if not pending:
            return [FollowupAction("action_record_outcome")]
        recorder = ConversationRecorder(tracker.sender_id, channel_of(tracker), tracker.get_slot("scenario"))
        sent: list[str] = []
        for message in pending:
            if "custom" in message:  # channel instructions (hand-over), not words anyone hears
                dispatcher.utter_message(json_message=message["custom"])
                continue
            text = str(message.get("text") or "")
            verdict = guard().verdict(text)
            blocked = verdict.blocking()
            flagged = [h for h in verdict.hits if h.severity != "block"]
            if flagged and not blocked:
                # A warn rule or a doubtful classifier finding: the line is sent, and staff review it on the record.
                log.info("compliance guard flagged a bot message for review",
                         extra={"fields": {"rules": [h.rule_id for h in flagged], "severity": [h.severity for h in flagged]}})
                recorder.note_compliance(text, [h.rule_id for h in flagged], blocked=False)
            if blocked:
                rules = [v.rule_id for v in blocked]
                log.warning("compliance guard blocked a bot message",
                            extra={"fields": {"rules": rules, "matched": [v.matched for v in blocked],
                                              "source": [v.source for v in blocked]}})
                recorder.note_compliance(text, rules)
                text = render(Say(response="utter_compliance_safe"), domain, {}) or SAFE_FALLBACK
            if message.get("buttons"):
                dispatcher.utter_message(text=text, buttons=message["buttons"])
            else:
                dispatcher.utter_message(text=text)
            sent.append(text)
        if sent:
            recorder.bot(*sent)
        return [SlotSet(PENDING_REPLIES, None), FollowupAction("action_record_outcome")]
