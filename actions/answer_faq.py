"""`action_answer_faq`: answer with the knowledge base's text for the FAQ the NLU service matched."""

from __future__ import annotations

import logging
import string
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from callbot.context import get_store
from knowledge_base.models import Intent, IntentKind

log = logging.getLogger(__name__)


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill_variables(text: str, values: dict[str, Any]) -> str:
    """Fill {variables} from slots; unknown ones stay visible rather than raising."""
    return string.Formatter().vformat(text, (), _KeepMissing({k: v for k, v in values.items() if v is not None}))


class ActionAnswerFaq(Action):
    def name(self) -> str:
        return "action_answer_faq"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        nlu = tracker.latest_message.get("callbot_nlu") or {}
        matched = nlu.get("matched") or {}
        intent_id = matched.get("intent_id")
        answer = None
        if intent_id:
            with get_store().session() as session:
                intent = session.scalar(select(Intent).where(Intent.id == int(intent_id), Intent.kind == IntentKind.faq))
                if intent is not None and intent.answer:
                    answer = intent.answer
        if answer is None:
            dispatcher.utter_message(response="utter_default")
            return []
        dispatcher.utter_message(text=fill_variables(answer, tracker.current_slot_values()))
        return []
