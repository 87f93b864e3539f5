"""Inbound chat: FAQ answers (with clarification when ambiguous), fallback, hand-over, complaints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.complaints import classify_complaint, topics_in_words
from actions.records import ConversationRecorder
from actions.replies import Outbox
from actions.script_engine import Say
from callbot.context import get_store
from knowledge_base.models import Intent, IntentKind

HUMAN_OFFERED = "human_offered"  # the bot's last line offered a human: "好的" now means "transfer me"


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


@dataclass
class ChatTurn:
    """One user turn in a chat: the parse, the recorder (user turn already written) and the outbox."""

    tracker: Tracker
    parse: dict[str, Any]
    recorder: ConversationRecorder
    reply: Outbox

    @property
    def text(self) -> str:
        return self.parse.get("text") or ""

    @property
    def intent(self) -> str | None:
        return (self.parse.get("intent") or {}).get("name")


class ChatAction(Action, ABC):
    """Records the user's turn and hands the action an outbox; what it collects goes through
    ``action_check_compliance`` next (abstract: rasa-sdk registers only concrete subclasses)."""

    action_name = ""

    def name(self) -> str:
        return self.action_name

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        parse = tracker.latest_message
        recorder = ConversationRecorder(tracker.sender_id, "chat")
        recorder.user(parse.get("text") or "", parse)
        box = Outbox(domain, tracker.current_slot_values())
        events = self.handle(ChatTurn(tracker, parse, recorder, box))
        return events + box.events()

    @abstractmethod
    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]: ...


class ActionAnswerFaq(ChatAction):
    action_name = "action_answer_faq"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        nlu = turn.parse.get("callbot_nlu") or {}
        picked = any(e.get("entity") == "faq_intent_id" for e in turn.parse.get("entities") or [])
        if nlu.get("decision") == "ambiguous" and not picked:
            options = [r for r in nlu.get("ranking", []) if r.get("kind") == "faq"][:2]
            if len(options) == 2:
                buttons = [{"title": o["standard_question"], "payload": f'/faq{{"faq_intent_id": {o["intent_id"]}}}'} for o in options]
                turn.reply.say(Say(response="utter_clarify"), buttons=buttons)
                return [SlotSet("fallback_count", 0)]
        found = matched_faq(turn.parse)
        if found is None:
            turn.reply.say(Say(response="utter_default"))  # "…需要为您转接人工客服吗？"
            return [SlotSet(HUMAN_OFFERED, True)]
        answer, standard_question = found
        # Show which question we answered, so a wrong match is obvious to the customer.
        turn.reply.say(Say(text=f"【{standard_question}】\n{answer}"))
        return [SlotSet("fallback_count", 0), SlotSet(HUMAN_OFFERED, False)]


def _hand_over(turn: ChatTurn, reason: str) -> list[dict[str, Any]]:
    turn.reply.say(Say(response="utter_handoff"))
    turn.reply.custom({"handoff": True, "reason": reason})
    turn.reply.finish("handed_over", {"reason": reason}, handed_over=True)
    return [SlotSet("fallback_count", 0), SlotSet(HUMAN_OFFERED, False)]


class ActionChatFallback(ChatAction):
    action_name = "action_chat_fallback"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        previous = int(turn.tracker.get_slot("fallback_count") or 0)
        if turn.tracker.get_slot(HUMAN_OFFERED) and turn.intent in ("affirm", "deny"):
            # The answer to "shall I transfer you?" (after a complaint, an unanswerable question or two misses).
            if turn.intent == "affirm":
                return _hand_over(turn, "accepted the offer of a human")
            turn.reply.say(Say(response="utter_anything_else"))
            return [SlotSet("fallback_count", 0), SlotSet(HUMAN_OFFERED, False)]
        count = previous + 1
        nlu_down = (turn.parse.get("callbot_nlu") or {}).get("error") == "nlu_unavailable"
        if nlu_down:
            turn.reply.say(Say(response="utter_service_trouble"))
        elif count >= 2:
            turn.reply.say(Say(response="utter_offer_human"))
        else:
            turn.reply.say(Say(response="utter_please_rephrase"))
        return [SlotSet("fallback_count", count), SlotSet(HUMAN_OFFERED, nlu_down or count >= 2)]


class ActionHandoff(ChatAction):
    action_name = "action_handoff"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        return _hand_over(turn, "customer request")


class ActionDoNotCall(ChatAction):
    """A chat customer (or hotline caller) asks not to be called again: acknowledged and recorded as ``do_not_call``
    so staff see it; the number is added to the list where the caller's number is known (outbound campaigns)."""
    action_name = "action_do_not_call"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        turn.reply.say(Say(response="utter_do_not_call_chat"))
        turn.reply.finish("do_not_call", {"reason": "customer request"})
        return [SlotSet("fallback_count", 0), SlotSet(HUMAN_OFFERED, False)]


class ActionClassifyComplaint(ChatAction):
    action_name = "action_classify_complaint"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        labels = classify_complaint(turn.text)
        turn.recorder.set_complaint_labels(labels or ["unclassified"])
        if labels:  # acknowledges what it is about, in the knowledge base's words, and offers a human
            turn.reply.variables["complaint_topics"] = topics_in_words(labels)
            turn.reply.say(Say(response="utter_complain_ack_topic"))
        else:
            turn.reply.say(Say(response="utter_complain_ack"))
        return [SlotSet("complaint_labels", labels), SlotSet(HUMAN_OFFERED, True)]


class ActionGoodbye(ChatAction):
    action_name = "action_goodbye"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        turn.reply.say(Say(response="utter_goodbye"))
        turn.reply.finish("completed")
        return []


class ActionGreet(ChatAction):
    """Greets a chat (the widget sends ``/greet`` when it opens; "你好" means the same) and nudges a
    silent one (``/silence`` from a channel's inactivity timer)."""

    action_name = "action_greet"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        turn.reply.say(Say(response="utter_still_there" if turn.intent == "silence" else "utter_greet"))
        return []


class ActionSayWhoWeAre(ChatAction):
    action_name = "action_ask_identity"

    def handle(self, turn: ChatTurn) -> list[dict[str, Any]]:
        turn.reply.say(Say(response="utter_ask_identity"))
        return []
