"""The outbound call script as a state machine over the knowledge base's steps (话术).

Pure logic, no Rasa and no database: given the scenario's steps, the pending step and what the
caller's turn was understood as, decide what the bot says next, where the script goes, and whether
the call ends with which outcome. Divergent questions (FAQ, "who are you", "why are you calling")
are answered and the pending step is asked again (主流程返回引导).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from actions.time_expressions import names_a_time, parse_callback_time

END = "end"
RETURN_PREFIX_KEY = "utter_return_to_script"
DO_NOT_CALL_STEP = "do_not_call_close"  # a scenario's closing for callers who ask not to be called again  # a domain response: "那我们继续刚才的话题。"

# Answers to "when may we call back?" that are not meant as a time: a refusal, a goodbye, a wish to stop, a
# person, a complaint, or that it was not them (dispute): taken as they are, never asked again for a time.
NOT_A_TIME_ANSWER = frozenset({"deny", "goodbye", "stop_calling", "request_human", "complain", "dispute", "silence"})
DEFAULT_TIMEZONE = "Asia/Shanghai"


def _local_now(state: CallState) -> datetime:
    """The caller's wall-clock time: the call's `timezone` variable (campaigns pass theirs), else China's."""
    try:
        zone = ZoneInfo(str(state.variables.get("timezone") or DEFAULT_TIMEZONE))
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError: an unknown name in a customer file
        zone = ZoneInfo(DEFAULT_TIMEZONE)
    return datetime.now(zone).replace(tzinfo=None)


@dataclass(frozen=True)
class Step:
    code: str
    kind: str
    prompt: str
    reprompt: str
    transitions: dict[str, str]
    terminal: bool
    # Declared in the knowledge base (required on terminal steps, checked on import). On a non-terminal step
    # it marks the path: the call is recorded so, whichever step ends it.
    outcome: str | None = None


@dataclass
class CallState:
    scenario: str
    step: str
    variables: dict[str, Any] = field(default_factory=dict)
    fallbacks: int = 0  # consecutive turns not understood
    denials: int = 0  # deny answers in this call
    confirmed: bool = False  # the caller affirmed a confirm step
    offered_human: bool = False
    marked_outcome: str | None = None  # from a non-terminal step with an outcome (the dispute path)
    time_asked: bool = False  # "when may we call back?" was asked again because no time could be read


@dataclass
class Say:
    """One bot message: literal text, or a domain response name (system lines live in bot/domain.yml)."""

    text: str | None = None
    response: str | None = None


@dataclass
class TurnResult:
    say: list[Say]
    state: CallState
    ended: bool = False
    outcome: str | None = None
    outcome_detail: dict[str, Any] = field(default_factory=dict)
    handoff: bool = False


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, variables: dict[str, Any]) -> str:
    return string.Formatter().vformat(text, (), _Keep({k: v for k, v in variables.items() if v is not None}))


class ScriptEngine:
    def __init__(self, steps: list[Step], intent_answers: dict[str, str]):
        if not steps:
            raise ValueError("a scenario needs at least one step")
        self.steps = {s.code: s for s in steps}
        self.first = steps[0].code
        self.answers = intent_answers  # scenario answers for ask_identity / ask_purpose …

    def start(self, state: CallState) -> TurnResult:
        state.step = self.first
        return TurnResult([Say(fill(self.steps[self.first].prompt, state.variables))], state)

    def _go(self, state: CallState, target: str, say: list[Say], user_text: str) -> TurnResult:
        if target == END:
            return TurnResult(say, state, ended=True, outcome="completed" if state.confirmed else "dropped")
        step = self.steps[target]
        state.step, state.fallbacks = target, 0
        say.append(Say(fill(step.prompt, state.variables)))
        if not step.terminal:
            state.marked_outcome = step.outcome or state.marked_outcome
            return TurnResult(say, state)
        declared = step.outcome or "completed"  # the importer requires one; "completed" only for old rows
        if declared == "completed" and state.confirmed:
            declared = "confirmed"  # the caller affirmed the call's confirm step (缴款 / 重新测评)
        outcome = state.marked_outcome or declared
        detail: dict[str, Any] = {"final_step": step.code}
        if outcome != declared:
            detail["final_step_outcome"] = declared
        if declared == "callback":
            detail["callback_time"] = user_text
            when = parse_callback_time(user_text, _local_now(state))
            if when is not None:  # the dialer dates it again in the campaign's time zone when it settles the call
                detail["callback_at"] = when.isoformat(timespec="minutes")
        return TurnResult(say, state, ended=True, outcome=outcome, outcome_detail=detail, handoff=declared == "handed_over")

    def asks_for_a_time(self, step: Step) -> bool:
        """A step whose free-text answer ends the call with a callback: "when may we call back?"."""
        target = step.transitions.get("nlu_fallback")
        return target is not None and target in self.steps and self.steps[target].outcome == "callback"

    def _time_unread(self, state: CallState, step: Step, intent: str, user_text: str) -> bool:
        if state.time_asked or not self.asks_for_a_time(step) or intent in NOT_A_TIME_ANSWER:
            return False
        if intent in self.answers and not names_a_time(user_text):
            return False  # a side question (who are you?): answered below, then the step is asked again
        free_text = intent not in step.transitions and intent not in ("silence", "greet") or names_a_time(user_text)
        callback = step.transitions.get(intent) == step.transitions["nlu_fallback"] or free_text
        return callback and parse_callback_time(user_text, _local_now(state)) is None

    def turn(self, state: CallState, intent: str, user_text: str = "", faq_answer: str | None = None) -> TurnResult:
        step = self.steps[state.step]
        if intent == "stop_calling" and intent not in step.transitions:
            # At any step, even one that takes free text or after an offer of a human: honour it now.
            state.offered_human = False
            if DO_NOT_CALL_STEP in self.steps:
                return self._go(state, DO_NOT_CALL_STEP, [], user_text)
            return TurnResult([Say(response="utter_do_not_call")], state, ended=True, outcome="do_not_call")
        if state.offered_human:  # we asked "shall I transfer you?" after not understanding twice
            state.offered_human = False
            if intent in ("affirm", "request_human"):
                return self._go(state, "handoff", [], user_text) if "handoff" in self.steps else TurnResult(
                    [Say(response="utter_handoff")], state, ended=True, outcome="handed_over", handoff=True)
            if intent in ("silence", "nlu_fallback") or (intent == "faq" and not faq_answer):
                return TurnResult([Say(response="utter_goodbye")], state, ended=True, outcome="dropped",
                                  outcome_detail={"reason": "not understood"})
            # Understood at last: "不用" to the transfer resumes the call with its pending question; a question or an
            # answer the step expects (开户要带什么材料, 我在开车) is taken as on any turn, not as the end of the call.
            state.fallbacks = 0
            if intent == "deny":
                return TurnResult([Say(fill(step.prompt, state.variables))], state)
        if intent == "affirm" and step.kind == "confirm":
            state.confirmed = True
        if intent == "deny":
            state.denials += 1
        if self._time_unread(state, step, intent, user_text):
            # "好的" / "改天吧" to "when may we call back?": no time to call at. Ask once more (the step's
            # reprompt); a second answer without one is taken, and the dialer's back-off picks the time.
            state.time_asked = True
            return TurnResult([Say(fill(step.reprompt or step.prompt, state.variables))], state)
        if intent in step.transitions:
            target = step.transitions[intent]
            if intent == "deny" and state.denials >= 2 and "refuse_close" in self.steps and not self.steps[target].terminal:
                target = "refuse_close"  # a second refusal ends the call politely
            return self._go(state, target, [], user_text)
        if intent in self.answers and intent not in step.transitions and not (
                "nlu_fallback" in step.transitions and names_a_time(user_text)):
            # A side question with a scenario answer (who are you, how much do I pay): answer it, ask again —
            # also at a step that takes free text, unless the words name a time (下周一上午吧 answers it).
            state.fallbacks = 0
            return TurnResult([Say(fill(self.answers[intent], state.variables)), Say(fill(step.prompt, state.variables))], state)
        if "nlu_fallback" in step.transitions and (intent not in ("silence", "greet") or
                                                   (intent == "greet" and names_a_time(user_text))):
            # This step takes free text (e.g. "when may we call back?"): whatever was said answers it. A
            # "greeting" that names a time (下周一上午吧 ≈ 上午好 to an encoder) is an answer too.
            return self._go(state, step.transitions["nlu_fallback"], [], user_text)
        if intent == "greet":  # "喂，你好" — the caller has just picked up or lost the line: ask again
            return TurnResult([Say(fill(step.prompt, state.variables))], state)
        if intent == "faq" and faq_answer:
            state.fallbacks = 0
            return TurnResult([Say(fill(faq_answer, state.variables)), Say(response=RETURN_PREFIX_KEY),
                               Say(fill(step.prompt, state.variables))], state)
        if intent == "request_human" and "handoff" in self.steps:
            return self._go(state, "handoff", [], user_text)
        if intent == "goodbye":
            return TurnResult([Say(response="utter_goodbye")], state, ended=True,
                              outcome="completed" if state.confirmed else "dropped")
        # Not understood, silence, or an answer this step does not expect: ask again in other words, once.
        state.fallbacks += 1
        if state.fallbacks == 1:
            return TurnResult([Say(fill(step.reprompt or step.prompt, state.variables))], state)
        state.offered_human = True
        return TurnResult([Say(response="utter_offer_human")], state)
