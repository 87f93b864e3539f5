"""Outbound calls: `action_start_call` (from the campaign's trigger_intent) and `action_script_turn`."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.complaints import classify_complaint, topics_in_words
from actions.faq import faq_answer
from actions.records import ConversationRecorder
from actions.replies import Outbox
from actions.script_engine import CallState, Say
from actions.scripts import load_engine, scenario_variables

log = logging.getLogger(__name__)


def _entities(tracker: Tracker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ent in tracker.latest_message.get("entities") or []:
        out[ent.get("entity")] = ent.get("value")
    return out


class ActionStartCall(Action):
    def name(self) -> str:
        return "action_start_call"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        ents = _entities(tracker)
        scenario = str(ents.get("scenario") or "")
        engine = load_engine(scenario) if scenario else None
        if engine is None:
            log.warning("outbound call for an unknown scenario", extra={"fields": {"scenario": scenario}})
            box = Outbox(domain)
            box.say(Say(response="utter_unknown_scenario"))
            return [SlotSet("call_mode", "chat"), *box.events()]
        variables = dict(ents.get("variables") or {}) if isinstance(ents.get("variables"), dict) else {}
        for name in scenario_variables(scenario):
            if name in ents:
                variables[name] = ents[name]
        state = CallState(scenario, "", variables)
        ConversationRecorder(tracker.sender_id, "outbound", scenario)  # the call exists from its first line
        result = engine.start(state)
        box = Outbox(domain, variables)
        box.say_all(result.say)
        return [SlotSet("call_mode", "outbound"), SlotSet("scenario", scenario), SlotSet("call_state", dataclasses.asdict(state)),
                *box.events()]


class ActionScriptTurn(Action):
    def name(self) -> str:
        return "action_script_turn"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        raw = tracker.get_slot("call_state") or {}
        scenario = tracker.get_slot("scenario") or raw.get("scenario")
        engine = load_engine(scenario) if scenario else None
        recorder = ConversationRecorder(tracker.sender_id, "outbound", scenario)
        parse = tracker.latest_message
        recorder.user(parse.get("text") or "", parse)
        if engine is None and raw:  # the scenario was deleted while this call was on: end it, recorded
            log.warning("call's scenario was deleted mid-call", extra={"fields": {"scenario": scenario}})
            box = Outbox(domain)
            box.say(Say(response="utter_scenario_withdrawn"))
            box.finish("dropped", {"reason": f"scenario {scenario} was deleted during the call"})
            return box.events()
        if engine is None or not raw:
            box = Outbox(domain)
            box.say(Say(response="utter_default"))
            return box.events()
        state = CallState(**raw)
        intent = (parse.get("intent") or {}).get("name") or "nlu_fallback"
        if intent == "scenario_question":  # the scenario's own question (ask_pay_amount …): its name is in the NLU result
            intent = ((parse.get("callbot_nlu") or {}).get("matched") or {}).get("intent") or "nlu_fallback"
        answer = faq_answer(parse) if intent == "faq" else None
        events: list[dict[str, Any]] = []
        # The scenario's complaint_ack prompt names the category ("您反映的{complaint_topics}问题"); the engine fills
        # prompts from the call's variables, where it stays for a repeated prompt ("" until a complaint is labelled).
        state.variables.setdefault("complaint_topics", "")
        if intent == "complain":
            labels = classify_complaint(parse.get("text") or "")
            recorder.set_complaint_labels(labels or ["unclassified"])
            events.append(SlotSet("complaint_labels", labels))
            state.variables["complaint_topics"] = topics_in_words(labels)
        result = engine.turn(state, intent, parse.get("text") or "", answer)
        box = Outbox(domain, result.state.variables)
        box.say_all(result.say)
        events.append(SlotSet("call_state", dataclasses.asdict(result.state)))
        if result.ended:
            box.finish(result.outcome or "completed", result.outcome_detail, handed_over=result.handoff)
            if result.handoff:
                box.custom({"handoff": True, "reason": "script"})
        return events + box.events()


class ActionCallEnded(Action):
    """Anything said after the outcome was recorded: say the call is over (the gateway hangs up)."""

    def name(self) -> str:
        return "action_call_ended"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        box = Outbox(domain)
        box.say(Say(response="utter_call_ended"))
        return box.events()
