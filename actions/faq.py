"""Inbound chat: FAQ answers (with clarification when ambiguous), fallback, hand-over, complaints."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.complaints import classify_complaint
from actions.records import ConversationRecorder
from actions.replies import Reply
from actions.script_engine import Say
from callbot.context import get_store
from knowledge_base.models import Intent, IntentKind


def _answer_for(intent_id: int) -> tuple[str, str] | None:
    with get_store().session() as s:
        it = s.scalar(select(Intent).where(Intent.id == int(intent_id), Intent.kind == IntentKind.faq))
        return (it.answer, it.standard_question) if it is not None and it.answer else None


def matched_faq(parse: dict[str, Any]) -> tuple[str, str] | None:
    """(answer, standard question) for the FAQ the NLU service matched, or the one a button picked."""
    for ent in parse.get("entities") or []:
        if ent.get("entity") == "faq_intent_id":
            try:
                return _answer_for(int(ent.get("value")))
            except (TypeError, ValueError):
                return None
    matched = (parse.get("callbot_nlu") or {}).get("matched") or {}
    if matched.get("intent_id") and matched.get("kind") == "faq":
        return _answer_for(matched["intent_id"])
    return None


def faq_answer(parse: dict[str, Any]) -> str | None:
    found = matched_faq(parse)
    return found[0] if found else None


class ActionAnswerFaq(Action):
    def name(self) -> str:
        return "action_answer_faq"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        reply = Reply(dispatcher, domain, recorder, tracker.current_slot_values())
        nlu = parse.get("callbot_nlu") or {}
        picked = any(e.get("entity") == "faq_intent_id" for e in parse.get("entities") or [])
        if nlu.get("decision") == "ambiguous" and not picked:
            options = [r for r in nlu.get("ranking", []) if r.get("kind") == "faq"][:2]
            if len(options) == 2:
                buttons = [{"title": o["standard_question"], "payload": f'/faq{{"faq_intent_id": {o["intent_id"]}}}'} for o in options]
                reply.say(Say(response="utter_clarify"), buttons=buttons)
                return [SlotSet("fallback_count", 0)]
        found = matched_faq(parse)
        if found is None:
            reply.say(Say(response="utter_default"))
            return []
        answer, standard_question = found
        # Show which question we answered, so a wrong match is obvious to the customer.
        reply.say(Say(text=f"【{standard_question}】\n{answer}"))
        return [SlotSet("fallback_count", 0)]


class ActionChatFallback(Action):
    def name(self) -> str:
        return "action_chat_fallback"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        previous = int(tracker.get_slot("fallback_count") or 0)
        intent = (parse.get("intent") or {}).get("name")
        reply = Reply(dispatcher, domain, recorder)
        if previous >= 2 and intent == "affirm":  # yes to "shall I transfer you?"
            reply.say(Say(response="utter_handoff"))
            dispatcher.utter_message(json_message={"handoff": True, "reason": "not understood"})
            recorder.finish("handed_over", {"reason": "not understood twice"}, handed_over=True)
            return [SlotSet("fallback_count", 0), SlotSet("outcome", "handed_over")]
        if previous >= 2 and intent == "deny":
            reply.say(Say(response="utter_anything_else"))
            return [SlotSet("fallback_count", 0)]
        count = previous + 1
        unavailable = (parse.get("callbot_nlu") or {}).get("error") == "nlu_unavailable"
        if unavailable:
            reply.say(Say(response="utter_service_trouble"))
        elif count >= 2:
            reply.say(Say(response="utter_offer_human"))
        else:
            reply.say(Say(response="utter_please_rephrase"))
        return [SlotSet("fallback_count", count)]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        Reply(dispatcher, domain, recorder).say(Say(response="utter_handoff"))
        dispatcher.utter_message(json_message={"handoff": True, "reason": "customer request"})
        recorder.finish("handed_over", {"reason": "customer request"}, handed_over=True)
        return [SlotSet("fallback_count", 0), SlotSet("outcome", "handed_over")]


class ActionClassifyComplaint(Action):
    def name(self) -> str:
        return "action_classify_complaint"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        labels = classify_complaint(parse.get("text") or "")
        recorder.set_complaint_labels(labels or ["unclassified"])
        Reply(dispatcher, domain, recorder).say(Say(response="utter_complain_ack"))
        return [SlotSet("complaint_labels", labels)]


class ActionGoodbye(Action):
    def name(self) -> str:
        return "action_goodbye"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        Reply(dispatcher, domain, recorder).say(Say(response="utter_goodbye"))
        recorder.finish("completed")
        return [SlotSet("outcome", "completed")]


class ActionSayWhoWeAre(Action):
    def name(self) -> str:
        return "action_ask_identity"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        Reply(dispatcher, domain, recorder).say(Say(response="utter_ask_identity"))
        return []
