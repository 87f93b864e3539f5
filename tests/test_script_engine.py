"""The outbound script state machine on the demo scenarios (pure logic, every branch the issue lists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from actions.script_engine import CallState, ScriptEngine, Step

DEMO = Path(__file__).resolve().parent.parent / "knowledge_base" / "demo" / "scenarios"
VARS = {"customer_name": "张先生", "stock_name": "华安科技", "stock_code": "688001", "allotted_shares": 500,
        "amount": "12,345.00", "pay_deadline": "11月25日"}


def engine(code: str) -> ScriptEngine:
    doc = yaml.safe_load((DEMO / f"{code}.yml").read_text(encoding="utf-8"))
    steps = [Step(s["code"], s["kind"], s["prompt"], s.get("reprompt") or "", s.get("transitions") or {}, bool(s.get("terminal")),
                  s.get("outcome")) for s in doc["steps"]]
    answers = {it["name"]: it["answer"] for it in doc.get("intents", []) if it.get("answer")}
    return ScriptEngine(steps, answers)


def texts(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.text or f"<{s.response}>" for s in result.say]


@pytest.fixture
def ipo() -> tuple[ScriptEngine, CallState]:
    e = engine("ipo_allotment_notice")
    state = CallState("ipo_allotment_notice", "", dict(VARS))
    first = e.start(state)
    assert "张先生" in texts(first)[0] and state.step == "identity_check"
    return e, state


def test_happy_path_fills_variables_and_confirms(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, "affirm")
    assert s.step == "allotment_notice" and "华安科技" in texts(r)[0] and "12,345.00" in texts(r)[0] and "{" not in texts(r)[0]
    r = e.turn(s, "affirm")
    assert s.step == "pay_confirm"
    r = e.turn(s, "affirm")
    assert s.step == "risk_disclosure" and not r.ended
    r = e.turn(s, "affirm")
    assert r.ended and r.outcome == "confirmed" and s.step == "closing"


def test_side_questions_are_answered_then_the_pending_step_is_asked_again(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "affirm")
    notice = e.steps["allotment_notice"].prompt
    r = e.turn(s, "ask_identity")
    assert s.step == "allotment_notice" and len(r.say) == 2 and texts(r)[1].startswith(notice[:6])
    r = e.turn(s, "faq", faq_answer="缴款请保证资金账户余额充足。")
    assert texts(r)[0] == "缴款请保证资金账户余额充足。" and texts(r)[1] == "<utter_return_to_script>" and s.step == "allotment_notice"


def test_busy_records_the_callback_time(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, "busy")
    assert s.step == "busy_close" and not r.ended
    r = e.turn(s, "ask_purpose", user_text="明天下午三点吧")  # free text: whatever the NLU thought it was
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_time"] == "明天下午三点吧"


@pytest.mark.parametrize("first", [("affirm", "好的好的"), ("nlu_fallback", "改天吧"), ("nlu_fallback", "你们看着办")])
def test_no_time_in_the_answer_asks_once_more_then_takes_what_is_said(ipo, first: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "busy")
    r = e.turn(s, *first)
    assert not r.ended and s.step == "busy_close" and texts(r) == [e.steps["busy_close"].reprompt], "asked again for a time"
    r = e.turn(s, "nlu_fallback", "都行吧")
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_time"] == "都行吧"
    assert "callback_at" not in r.outcome_detail, "nothing to date: the dialer's back-off decides"


def test_a_time_after_the_second_ask_is_dated_on_the_calls_clock(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    s.variables["timezone"] = "Asia/Shanghai"
    e.turn(s, "busy")
    e.turn(s, "affirm", "行")
    r = e.turn(s, "nlu_fallback", "后天上午十点吧")
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_at"].endswith("T10:00")


@pytest.mark.parametrize(("intent", "text"), [("deny", "不方便"), ("goodbye", "再见"), ("complain", "你们老打电话烦死了")])
def test_a_refusal_or_goodbye_is_not_asked_for_a_time(ipo, intent: str, text: str) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "busy")
    r = e.turn(s, intent, text)
    assert s.step != "busy_close" or r.ended, "the answer was taken, not asked again"


@pytest.mark.parametrize(("intent", "outcome"), [("wrong_person", "wrong_person"), ("request_human", "handed_over")])
def test_closing_branches(ipo, intent: str, outcome: str) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, intent)
    assert r.ended and r.outcome == outcome
    assert r.handoff == (outcome == "handed_over")


def test_complaint_then_refusing_a_human_closes_as_complained(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "complain")
    assert s.step == "complaint_ack"
    r = e.turn(s, "deny")
    assert r.ended and r.outcome == "complained"


def test_fallback_reprompts_once_then_offers_a_human(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, "nlu_fallback")
    assert texts(r) == [e.steps["identity_check"].reprompt.replace("{customer_name}", "张先生")]
    r = e.turn(s, "nlu_fallback")
    assert texts(r) == ["<utter_offer_human>"] and not r.ended
    r = e.turn(s, "affirm")
    assert r.ended and r.outcome == "handed_over"


def test_after_the_offer_of_a_human_an_understood_turn_carries_the_call_on(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    prompt = e.steps["identity_check"].prompt.replace("{customer_name}", "张先生")
    for _ in range(2):
        e.turn(s, "nlu_fallback")
    r = e.turn(s, "faq", "开户需要带什么材料", faq_answer="带上身份证即可。")
    assert not r.ended and texts(r)[0] == "带上身份证即可。" and texts(r)[-1] == prompt, "a side question is answered"
    for _ in range(2):
        e.turn(s, "nlu_fallback")
    r = e.turn(s, "deny", "不用转")
    assert not r.ended and texts(r) == [prompt] and s.step == "identity_check", "no to the transfer: the call goes on"
    r = e.turn(s, "affirm")
    assert not r.ended and s.step == "allotment_notice", "the caller's answer is taken as on any turn"


def test_silence_reprompts_then_a_second_silence_closes_after_the_offer(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, "silence")
    assert texts(r) == [e.steps["identity_check"].reprompt.replace("{customer_name}", "张先生")]
    assert texts(e.turn(s, "silence")) == ["<utter_offer_human>"]
    r = e.turn(s, "silence")  # no answer to "shall I transfer you?" either
    assert r.ended and r.outcome == "dropped"


def test_silence_is_not_taken_as_the_callback_time_and_greet_repeats_the_step(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "busy")
    assert s.step == "busy_close"
    r = e.turn(s, "silence")
    assert not r.ended and s.step == "busy_close"
    r = e.turn(s, "greet")
    assert "华安科技" in texts(r)[0] and texts(r)[0].endswith("再给您回个电话？") and s.fallbacks == 1
    r = e.turn(s, "greet", "喂，你好")
    assert not r.ended and s.step == "busy_close", "a plain greeting is not a time"
    r = e.turn(s, "nlu_fallback", "明天下午三点")
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_time"] == "明天下午三点"


def test_a_time_heard_as_a_greeting_still_answers_the_callback_question(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "busy")
    r = e.turn(s, "greet", "下周一上午吧")  # an encoder may match 上午 to 上午好
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_time"] == "下周一上午吧"


@pytest.mark.parametrize(("text", "is_time"), [
    ("下周一上午吧", True), ("明天下午三点", True), ("两点以后再打", True), ("过两天吧", True), ("下午好，明天再打吧", True),
    ("喂，你好", False), ("早上好", False), ("晚上好啊", False), ("上午好，请问你是谁", False), ("", False), ("好的", False),
])
def test_names_a_time(text: str, is_time: bool) -> None:
    from actions.time_expressions import names_a_time

    assert names_a_time(text) is is_time


# Friday 2026-12-04, 10:00 and 15:00 on the caller's clock.
@pytest.mark.parametrize(("text", "at_ten", "at_three"), [
    ("两点以后再打吧", "12-04 14:00", "12-05 14:00"),  # a bare hour from one to eight is the afternoon
    ("早上九点", "12-05 09:00", "12-05 09:00"),  # gone by today: tomorrow
    ("明天两点", "12-05 14:00", "12-05 14:00"),
    ("下周一上午十点", "12-07 10:00", "12-07 10:00"),
    ("周三", "12-09 00:00", "12-09 00:00"),  # this week's Wednesday went by: next week's
    ("今天晚上", "12-04 18:00", "12-04 18:00"),
    ("喂，你好", None, None), ("好的", None, None), ("改天吧", None, None), ("今天早上九点", None, None),
])
def test_parse_callback_time_means_the_next_such_time(text: str, at_ten: str | None, at_three: str | None) -> None:
    from datetime import datetime

    from actions.time_expressions import parse_callback_time

    for hour, expected in ((10, at_ten), (15, at_three)):
        found = parse_callback_time(text, datetime(2026, 12, 4, hour, 0))
        assert (found.strftime("%m-%d %H:%M") if found else None) == expected, (text, hour)


def test_repeated_deny_closes_politely_as_refused(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    e.turn(s, "affirm")
    e.turn(s, "deny")  # does not want to pay → the script asks once more
    assert s.step == "give_up_check"
    r = e.turn(s, "deny")
    assert r.ended and r.outcome == "refused"


def test_goodbye_at_the_start_is_a_dropped_call(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    r = e.turn(s, "goodbye")
    assert r.ended and r.outcome == "dropped"


@pytest.mark.parametrize("code", ["risk_assessment_expiry", "service_followup"])
def test_other_scenarios_reach_their_closing(code: str) -> None:
    e = engine(code)
    s = CallState(code, "", {"customer_name": "李女士", "risk_level": "C3", "expiry_date": "12月1日",
                             "business_name": "创业板权限开通", "handle_date": "11月20日"})
    e.start(s)
    for _ in range(8):
        r = e.turn(s, "affirm")
        if r.ended:
            break
    assert r.ended and r.outcome in ("confirmed", "completed", "handed_over")


def test_a_question_about_the_call_is_answered_from_its_variables_at_any_step(ipo) -> None:  # type: ignore[no-untyped-def]
    e, s = ipo
    notice = texts(e.turn(s, "affirm"))[0]
    r = e.turn(s, "ask_pay_amount", "中签了要交多少钱来着")
    assert "12,345.00" in texts(r)[0] and texts(r)[1] == notice and s.step == "allotment_notice" and not r.ended
    # At the free-text step ("when may we call back?") the fact is answered and the question asked again…
    e.turn(s, "busy")
    assert s.step == "busy_close"
    r = e.turn(s, "ask_pay_deadline", "最晚哪天要交钱")
    assert "11月25日" in texts(r)[0] and s.step == "busy_close" and not r.ended
    # …but words that name a time answer it, whatever they were matched as.
    r = e.turn(s, "ask_pay_deadline", "下周一上午吧")
    assert r.ended and r.outcome == "callback" and r.outcome_detail["callback_time"] == "下周一上午吧"


FOLLOWUP_VARS = {"customer_name": "李女士", "business_name": "创业板权限开通", "handle_date": "11月20日"}


@pytest.mark.parametrize("step", ["identity_check", "followup_notice", "own_will_confirm", "risk_disclosure", "satisfaction_check"])
def test_a_dispute_from_any_step_is_recorded_as_disputed_even_when_handed_over(step: str) -> None:
    e = engine("service_followup")
    s = CallState("service_followup", "", dict(FOLLOWUP_VARS))
    e.start(s)
    for _ in range(6):  # affirm until the step under test is asked
        if s.step == step:
            break
        e.turn(s, "affirm")
    assert s.step == step
    r = e.turn(s, "dispute", "不是我办的，我没办过这个")
    assert s.step == "not_own_handling" and not r.ended and "核实" in texts(r)[0]
    r = e.turn(s, "affirm")  # yes, transfer me: still a dispute, and handed over
    assert r.ended and r.outcome == "disputed" and r.handoff
    assert r.outcome_detail == {"final_step": "handoff", "final_step_outcome": "handed_over"}


def test_declining_the_transfer_closes_the_dispute_as_disputed() -> None:
    e = engine("service_followup")
    s = CallState("service_followup", "", dict(FOLLOWUP_VARS))
    e.start(s)
    e.turn(s, "affirm")
    e.turn(s, "affirm")
    assert s.step == "own_will_confirm"
    e.turn(s, "deny", "不是")  # "is it your own will?" — "no" is the dispute path too
    r = e.turn(s, "deny", "不用转了")
    assert r.ended and r.outcome == "disputed" and not r.handoff and s.step == "not_own_close"


def test_a_terminal_step_records_what_it_declares() -> None:
    steps = [Step("ask", "notice", "?", "", {"affirm": "done_custom", "deny": "plain_close"}, False),
             Step("done_custom", "closing", "bye", "", {}, True, "refused"),
             Step("plain_close", "closing", "bye", "", {}, True, "completed")]
    e = ScriptEngine(steps, {})
    s = CallState("x", "", {})
    e.start(s)
    r = e.turn(s, "affirm")
    assert r.ended and r.outcome == "refused" and r.outcome_detail == {"final_step": "done_custom"}
    s = CallState("x", "", {})
    e.start(s)
    assert e.turn(s, "deny").outcome == "completed"


@pytest.mark.parametrize("code", ["ipo_allotment_notice", "risk_assessment_expiry", "service_followup"])
def test_asking_not_to_be_called_again_closes_at_any_step(code: str) -> None:
    e = engine(code)
    variables = {**VARS, "risk_level": "C3", "expiry_date": "12月20日", "business_name": "创业板权限", "handle_date": "11月28日"}
    for path in ([], ["affirm"], ["busy"], ["x", "x"]):  # at the greeting, mid-script, at a free-text step, after an offer of a human
        state = CallState(code, "", dict(variables))
        e.start(state)
        for intent in path:
            e.turn(state, intent)
        r = e.turn(state, "stop_calling", user_text="以后别给我打电话了")
        assert r.ended and r.outcome == "do_not_call" and state.step == "do_not_call_close", (code, path)
        said = texts(r)[0]
        assert "不再" in said and "{" not in said and not state.offered_human
    if code == "ipo_allotment_notice":
        assert "12,345.00" in said, "the one fact the call must deliver is still said"


def test_a_scenario_without_its_own_closing_still_honours_the_request() -> None:
    e = ScriptEngine([Step("ask", "notice", "您好，{customer_name}", "", {"affirm": "end"}, False)], {})
    state = CallState("mini", "", {"customer_name": "王女士"})
    e.start(state)
    r = e.turn(state, "stop_calling")
    assert r.ended and r.outcome == "do_not_call" and texts(r) == ["<utter_do_not_call>"]
