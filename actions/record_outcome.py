"""``action_record_outcome``: writes the outcome a content action reached onto the conversation.

Runs after ``action_check_compliance`` on every turn; does nothing when no outcome is pending. An
outbound call is over once its outcome is recorded (``call_mode=ended``); a chat goes on.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.check_compliance import channel_of
from actions.records import ConversationRecorder
from actions.replies import PENDING_OUTCOME


class ActionRecordOutcome(Action):
    def name(self) -> str:
        return "action_record_outcome"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        pending = tracker.get_slot(PENDING_OUTCOME)
        if not pending:
            return []
        recorder = ConversationRecorder(tracker.sender_id, channel_of(tracker), tracker.get_slot("scenario"))
        outcome = str(pending.get("outcome") or "completed")
        recorder.finish(outcome, pending.get("detail") or {}, handed_over=bool(pending.get("handed_over")))
        events = [SlotSet("outcome", outcome), SlotSet(PENDING_OUTCOME, None)]
        if tracker.get_slot("call_mode") == "outbound":
            events.append(SlotSet("call_mode", "ended"))
        return events
