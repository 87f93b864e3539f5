"""Conversations through Rasa's REST channel with the real Rasa server, action server and NLU service."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import pytest

from tests.conftest import SAFE_REPLY, STAFF_USER, as_staff, http

IPO_VARS = {"stock_name": "华安科技", "stock_code": "688001", "allotted_shares": 500, "amount": "12345.00", "pay_deadline": "11月25日"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def product(dialogue_product: dict[str, Any]) -> dict[str, Any]:
    return dialogue_product


def start_call(product: dict[str, Any], sender: str, scenario: str = "ipo_allotment_notice", **variables: Any) -> list[str]:
    body = {"name": "EXTERNAL_start_call", "entities": {"scenario": scenario, "customer_name": "张先生", "variables": variables or IPO_VARS}}
    status, result = http("POST", product["rasa"] + f"/conversations/{sender}/trigger_intent?output_channel=latest", body)
    assert status == 200, result
    return [m.get("text", "") for m in result.get("messages", [])]


def say(product: dict[str, Any], sender: str, text: str) -> list[dict[str, Any]]:
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": sender, "message": text})
    assert status == 200, reply
    return reply


def texts(reply: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in reply if "text" in m]


def conversation(product: dict[str, Any], sender: str) -> dict[str, Any]:
    with sqlite3.connect(product["db"]) as db:
        db.row_factory = sqlite3.Row
        conv = db.execute("SELECT * FROM conversation WHERE external_id = ?", (sender,)).fetchone()
        turns = db.execute("SELECT speaker, text, intent, score FROM conversation_turn WHERE conversation_id = ? ORDER BY seq",
                           (conv["id"],)).fetchall()
    return {**dict(conv), "turns": [dict(t) for t in turns], "outcome_detail": json.loads(conv["outcome_detail"]),
            "complaint_labels": json.loads(conv["complaint_labels"])}


def test_outbound_call_answers_side_questions_and_returns_to_the_script(product: dict[str, Any]) -> None:
    opening = start_call(product, "ipo-1")
    assert opening and "张先生" in opening[0]
    reply = texts(say(product, "ipo-1", "你哪位"))
    assert len(reply) == 2 and reply[1] == opening[0], "who-are-you is answered, then the identity question again"
    notice = texts(say(product, "ipo-1", "嗯是我"))[0]
    assert "华安科技" in notice and "12345.00" in notice and "{" not in notice
    reply = texts(say(product, "ipo-1", "证券账户怎么销户"))
    assert len(reply) == 3 and "销户" in reply[0] and reply[2] == notice, "FAQ answered, then back to the pending step"
    for answer in ("好的知道了", "对", "好"):
        reply = texts(say(product, "ipo-1", answer))
    record = conversation(product, "ipo-1")
    assert record["outcome"] == "confirmed" and record["ended_at"]
    users = [t for t in record["turns"] if t["speaker"] == "user"]
    assert [t["intent"] for t in users[:3]] == ["ask_identity", "affirm", "faq_close_account"]
    assert all(t["score"] and t["score"] > 0.5 for t in users)


def test_busy_caller_gets_a_callback(product: dict[str, Any]) -> None:
    start_call(product, "ipo-busy")
    ask_time = texts(say(product, "ipo-busy", "我在开车呢回头再说"))
    assert ask_time and "方便" in ask_time[0]
    say(product, "ipo-busy", "明天下午三点以后吧")
    record = conversation(product, "ipo-busy")
    assert record["outcome"] == "callback" and record["outcome_detail"]["callback_time"] == "明天下午三点以后吧"
    assert record["outcome_detail"]["callback_at"].endswith("T15:00"), "dated on the call's clock"


def test_a_callback_answer_with_no_time_is_asked_once_more(product: dict[str, Any]) -> None:
    start_call(product, "ipo-busy-vague")
    ask_time = texts(say(product, "ipo-busy-vague", "在开会，等会儿再打"))
    again = texts(say(product, "ipo-busy-vague", "好的好的"))
    assert again and "方便" in again[0] and again[0] != ask_time[0], "asked again, in other words"
    assert conversation(product, "ipo-busy-vague")["ended_at"] is None
    say(product, "ipo-busy-vague", "那就后天上午十点")
    record = conversation(product, "ipo-busy-vague")
    assert record["outcome"] == "callback" and record["outcome_detail"]["callback_at"].endswith("T10:00")


def test_wrong_person(product: dict[str, Any]) -> None:
    start_call(product, "ipo-wrong")
    say(product, "ipo-wrong", "你打错了，我不是他")
    assert conversation(product, "ipo-wrong")["outcome"] == "wrong_person"
    assert "通话已经结束" in texts(say(product, "ipo-wrong", "喂？还在吗"))[0]




def test_complaint_is_classified_then_handed_over(product: dict[str, Any], complaint_model: Any) -> None:
    start_call(product, "ipo-complain")
    reply = texts(say(product, "ipo-complain", "我要投诉你们，天天打电话骚扰"))
    assert SAFE_REPLY not in reply and "非常抱歉" in reply[0] and "转接人工" in reply[0], reply  # complaint_ack
    reply_said = reply[0]
    reply = say(product, "ipo-complain", "转人工")
    assert any(m.get("custom", {}).get("handoff") for m in reply), reply
    record = conversation(product, "ipo-complain")
    assert record["outcome"] == "handed_over" and record["handed_over"] == 1
    assert "harassing_calls" in record["complaint_labels"], record["complaint_labels"]
    with sqlite3.connect(product["db"]) as db:
        name = db.execute("SELECT name FROM complaint_label WHERE code = 'harassing_calls'").fetchone()[0]
    assert "您反映的“" in reply_said and f"“{name}”" in reply_said, reply_said  # the prompt names the category


def test_not_understood_twice_offers_a_human(product: dict[str, Any]) -> None:
    opening = start_call(product, "ipo-lost")
    first = texts(say(product, "ipo-lost", "今天晚饭吃火锅还是烧烤呢"))
    assert first and first[0] != opening[0], "re-prompted in other words"
    second = texts(say(product, "ipo-lost", "楼下的猫又跑出去玩了"))
    assert "人工" in second[0]


def test_repeated_refusal_ends_politely(product: dict[str, Any]) -> None:
    start_call(product, "ipo-refuse")
    say(product, "ipo-refuse", "是我")
    say(product, "ipo-refuse", "不想要了")
    say(product, "ipo-refuse", "我放弃缴款")
    assert conversation(product, "ipo-refuse")["outcome"] == "refused"


def test_unknown_scenario_is_answered_safely(product: dict[str, Any]) -> None:
    messages = start_call(product, "bad-call", scenario="no_such_scenario")
    assert messages and "无法发起" in messages[0]
    reply = texts(say(product, "bad-call", "喂？"))  # the conversation continues as a chat, nothing crashed
    assert reply == ["您好，我是XX证券智能客服，请问有什么可以帮您？"], reply  # utter_greet, not the channel's safe line


def test_chat_faq_clarification_fallback_and_handover(product: dict[str, Any]) -> None:
    reply = say(product, "chat-1", "我想开个户怎么弄")
    assert reply[0]["text"].startswith("【") and "开户" in reply[0]["text"]
    reply = say(product, "chat-1", "转人工")
    assert any(m.get("custom", {}).get("handoff") for m in reply), "转人工 in chat is a request, not an FAQ"
    assert texts(say(product, "chat-2", "今天晚饭吃火锅还是烧烤呢"))[0].startswith("抱歉")
    assert "人工" in texts(say(product, "chat-2", "楼下的猫又跑出去玩了"))[0]
    reply = say(product, "chat-2", "好的")
    assert any(m.get("custom", {}).get("handoff") for m in reply)
    assert conversation(product, "chat-2")["outcome"] == "handed_over"


def test_chat_customer_asking_not_to_be_called_is_recorded(product: dict[str, Any]) -> None:
    said = texts(say(product, "chat-dnc", "以后别给我打推销电话了"))
    assert "免打扰" in said[0], said
    assert conversation(product, "chat-dnc")["outcome"] == "do_not_call"


def test_ambiguous_question_offers_two_buttons_that_work(product: dict[str, Any]) -> None:
    for question in ("逆回购", "权限", "转账", "密码", "中签", "融资融券", "科创板"):
        reply = say(product, f"amb-{question}", question)
        buttons = reply[0].get("buttons") if reply else None
        if buttons:
            break
    else:
        pytest.fail("none of the short questions was ambiguous")
    assert len(buttons) == 2 and all(b["payload"].startswith("/faq{") for b in buttons)
    answer = say(product, "amb-pick", buttons[0]["payload"])
    assert answer[0]["text"].startswith(f"【{buttons[0]['title']}】")


@pytest.mark.parametrize("message", ["", "   ", "开户" * 2500, "😀😀😀", "\u0000\u0007"], ids=["empty", "blank", "5000-chars", "emoji", "control"])
def test_bad_messages_get_sensible_answers(product: dict[str, Any], message: str) -> None:
    sender = f"bad-input-{len(message)}-{ord(message[0]) if message else 0}"
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": sender, "message": message})
    assert status == 200 and isinstance(reply, list)
    said = texts(reply)
    assert SAFE_REPLY not in said, "the actions ran: the channel's last-resort line is not an answer"
    if message.startswith("开户"):
        # 5,000 characters are cut to the NLU's 512 and answered, or not understood: either way a real reply.
        assert said and (said[0].startswith("【") and "开户" in said[0] or said[0].startswith("抱歉")), said
    elif message.strip() and message.strip("\u0000\u0007"):
        assert said and said[0].startswith("抱歉"), said  # not understood: the chat fallback line
    else:
        assert said in ([], ["您好，我是XX证券智能客服，请问有什么可以帮您？"]) or said[0].startswith("抱歉"), said


def test_compliance_guard_blocks_prohibited_wording(product: dict[str, Any]) -> None:
    query = "SELECT answer FROM intent WHERE name = 'faq_reverse_repo_how_to'"
    with sqlite3.connect(product["db"]) as db:
        original = db.execute(query).fetchone()[0]
        db.execute("UPDATE intent SET answer = '逆回购保本保收益，零风险，放心买。' WHERE name = 'faq_reverse_repo_how_to'")
        db.execute("UPDATE kb_state SET version = version + 1")
    try:
        reply = texts(say(product, "chat-comp", "逆回购怎么买"))
        assert reply and "保本保收益" not in reply[0] and "零风险" not in reply[0]
        assert "投资有风险" in reply[0] and SAFE_REPLY not in reply
        blocked = conversation(product, "chat-comp")["outcome_detail"]["compliance_blocked"]
        assert blocked and blocked[0]["rules"], "the incident is recorded with the rule ids"
    finally:  # the product is shared: put the answer back
        with sqlite3.connect(product["db"]) as db:
            db.execute("UPDATE intent SET answer = ? WHERE name = 'faq_reverse_repo_how_to'", (original,))
            db.execute("UPDATE kb_state SET version = version + 1")
    with sqlite3.connect(product["db"]) as db:
        assert db.execute(query).fetchall() == [(original,)]


@pytest.mark.parametrize(
    ("scenario", "variables", "answers", "outcome"),
    [
        ("risk_assessment_expiry", {"risk_level": "C3稳健型", "expiry_date": "12月1日"}, ["是我", "好的", "是的", "知道了", "嗯", "好的"],
         "confirmed"),
        ("service_followup", {"business_name": "创业板权限开通", "handle_date": "11月20日"},
         ["是我", "好的", "是我本人办的", "知道了", "满意", "好的"], "confirmed"),
    ],
)
def test_other_scenarios_run_to_their_close(product: dict[str, Any], scenario: str, variables: dict[str, str],
                                            answers: list[str], outcome: str) -> None:
    sender = f"{scenario}-1"
    opening = start_call(product, sender, scenario, **variables)
    assert "张先生" in opening[0]
    for answer in answers:
        reply = texts(say(product, sender, answer))
        assert all("{" not in t for t in reply), reply
        if conversation(product, sender)["outcome"]:
            break
    assert conversation(product, sender)["outcome"] == outcome


SCENARIO_CALLS = {
    "ipo_allotment_notice": (IPO_VARS, {"affirm": "对，是我本人", "busy": "开会呢，稍后再说", "wrong_person": "找他干嘛",
                                        "deny": ["不缴了", "这个新股我不要了"]}),
    "risk_assessment_expiry": ({"risk_level": "C3稳健型", "expiry_date": "12月1日"},
                               {"affirm": "是本人", "busy": "我在开车", "wrong_person": "打错电话了", "deny": ["不想做测评", "测评就先不做了"]}),
    "service_followup": ({"business_name": "创业板权限开通", "handle_date": "11月20日"},
                         {"affirm": "没错，是我", "busy": "在上班，回头打给我", "wrong_person": "这不是他的电话",
                          "deny": ["不用了", "不需要"]}),
}


def executed_actions(product: dict[str, Any], sender: str) -> list[str]:
    status, tracker = http("GET", product["rasa"] + f"/conversations/{sender}/tracker")
    assert status == 200
    return [e["name"] for e in tracker["events"] if e["event"] == "action"]


@pytest.mark.parametrize("scenario", sorted(SCENARIO_CALLS))
@pytest.mark.parametrize("branch", ["busy", "wrong_person", "refusal", "silence"])
def test_every_scenario_closes_each_branch_with_its_outcome(product: dict[str, Any], scenario: str, branch: str) -> None:
    variables, phrases = SCENARIO_CALLS[scenario]
    sender = f"{scenario}-{branch}"
    opening = start_call(product, sender, scenario, **variables)
    if branch == "busy":
        say(product, sender, phrases["busy"])
        say(product, sender, "下周一上午吧")
        expected = "callback"
    elif branch == "wrong_person":
        say(product, sender, phrases["wrong_person"])
        expected = "wrong_person"
    elif branch == "refusal":
        say(product, sender, phrases["affirm"])
        for answer in phrases["deny"]:
            say(product, sender, answer)
        expected = "refused"
    else:
        reprompt = texts(say(product, sender, "/silence"))
        assert reprompt and reprompt[0] != opening[0], "silence is met with the step's re-prompt"
        assert "人工" in texts(say(product, sender, "/silence"))[0]
        say(product, sender, "/silence")
        expected = "dropped"
    record = conversation(product, sender)
    assert record["outcome"] == expected and record["ended_at"], record["turns"]
    if branch == "busy":
        assert record["outcome_detail"]["callback_time"] == "下周一上午吧"
    actions = executed_actions(product, sender)
    # Every content action is followed by the compliance check and the outcome record, in that order.
    for i, name in enumerate(actions):
        if name in ("action_start_call", "action_script_turn"):
            assert actions[i + 1 : i + 3] == ["action_check_compliance", "action_record_outcome"], actions


def test_chat_greets_from_the_domain_and_nudges_a_silent_customer(product: dict[str, Any]) -> None:
    greeting = texts(say(product, "chat-greet", "/greet"))
    assert greeting and "请问有什么可以帮您" in greeting[0]
    assert texts(say(product, "chat-greet", "你好，在吗")) == greeting, "typing 你好 gets the same greeting"
    nudge = texts(say(product, "chat-greet", "/silence"))
    assert nudge and "还在吗" in nudge[0]
    say(product, "chat-greet", "我手机13812345678，身份证110101199003071234")
    record = conversation(product, "chat-greet")
    assert [t["speaker"] for t in record["turns"]] == ["event", "bot", "user", "bot", "event", "bot", "user", "bot"]
    assert [t["text"] for t in record["turns"] if t["speaker"] == "event"] == ["/greet", "/silence"]
    assert record["outcome"] is None
    said = record["turns"][6]["text"]
    assert said == "我手机138****5678，身份证110101********1234", "numbers a customer types are stored masked"


def test_staff_see_handed_over_conversations_with_their_transcript(product: dict[str, Any]) -> None:
    start_call(product, "ipo-queue")
    say(product, "ipo-queue", "我要找真人")
    status, listing = http("GET", product["web"] + "/conversations?handed_over=true&scenario=ipo_allotment_notice")
    assert status == 200 and "ipo-queue" in [c["id"] for c in listing["conversations"]]
    assert all(c["handed_over"] for c in listing["conversations"])
    status, record = http("GET", product["web"] + "/conversations/ipo-queue")
    assert status == 200 and record["outcome"] == "handed_over" and record["scenario"] == "ipo_allotment_notice"
    user_turns = [t for t in record["turns"] if t["speaker"] == "user"]
    assert user_turns[0]["text"] == "我要找真人" and user_turns[0]["intent"] == "request_human" and user_turns[0]["score"] > 0.5
    assert http("GET", product["web"] + "/conversations?outcome=maybe")[0] == 400
    assert http("GET", product["web"] + "/conversations?limit=0")[0] == 400
    assert http("GET", product["web"] + "/conversations/no-such-call")[0] == 404


def test_chat_complaint_offers_a_human_and_yes_means_transfer(product: dict[str, Any]) -> None:
    ack = texts(say(product, "chat-complaint", "你们服务太差劲了，我要投诉"))
    assert ack and "人工" in ack[0]
    reply = say(product, "chat-complaint", "好的")
    assert any(m.get("custom", {}).get("handoff") for m in reply), reply
    record = conversation(product, "chat-complaint")
    assert record["outcome"] == "handed_over" and record["complaint_labels"]
    # Saying no to the offer keeps the chat going instead.
    say(product, "chat-complaint-2", "你们服务太差劲了，我要投诉")
    assert "还有什么可以帮您" in texts(say(product, "chat-complaint-2", "不用了"))[0]
    assert conversation(product, "chat-complaint-2")["outcome"] is None


def test_chat_complaint_is_labelled_by_the_model_and_acknowledged_by_its_category(
        product: dict[str, Any], complaint_model: Any) -> None:
    # Installed after the action server started: it is picked up without a restart.
    ack = texts(say(product, "chat-fees", "你们佣金收万分之三，比别家高太多了，交割单上的费用也算不明白，我要投诉"))
    record = conversation(product, "chat-fees")
    assert "fee_too_high" in record["complaint_labels"], record["complaint_labels"]
    with sqlite3.connect(product["db"]) as db:
        names = dict(db.execute("SELECT code, name FROM complaint_label"))
    assert ack and any(f"“{names[code]}”" in ack[0] for code in record["complaint_labels"]), ack
    status, listing = http("GET", product["web"] + "/conversations/complaints?label=fee_too_high")
    assert status == 200 and "chat-fees" in [c["id"] for c in listing["conversations"]]
    assert any(c["complaint"].startswith("你们佣金") for c in listing["conversations"])
    counted = {row["code"]: row for row in listing["labels"]}
    assert counted["fee_too_high"]["count"] >= 1 and counted["fee_too_high"]["name"] == names["fee_too_high"]
    assert counted["fee_too_high"]["category"] == names["fees"]
    assert http("GET", product["web"] + "/conversations/complaints?label=no_such_label")[0] == 400

    # Staff see it in the admin page, in Chromium: complaints by label, then the label's conversations.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import chromium, sign_in
    from tests.conftest import STAFF_PASSWORD, STAFF_USER

    with chromium() as browser:
        wait = WebDriverWait(browser, 60)
        sign_in(browser, product["web"], STAFF_USER, STAFF_PASSWORD)
        wait.until(lambda b: b.find_element(By.ID, "complaints-open")).click()
        row = wait.until(lambda b: next((tr for tr in b.find_elements(By.CSS_SELECTOR, "#c-labels tr")
                                         if tr.find_elements(By.TAG_NAME, "td")[0].text == names["fee_too_high"]), None))
        assert row.find_elements(By.TAG_NAME, "td")[1].text == names["fees"]
        row.click()
        wait.until(lambda b: b.find_element(By.ID, "c-title").text == f"“{names['fee_too_high']}”的投诉")
        shown = {tr.find_elements(By.TAG_NAME, "td")[0].text: tr.find_elements(By.TAG_NAME, "td")[4].text
                 for tr in browser.find_elements(By.CSS_SELECTOR, "#c-convs tr")}
        assert shown.get("chat-fees", "").startswith("你们佣金"), shown
        assert browser.find_element(By.ID, "kb").get_attribute("hidden") is not None  # the KB view is out of the way


@pytest.mark.parametrize(
    ("scenario", "variables", "question", "fact"),
    [
        ("ipo_allotment_notice", IPO_VARS, "一共要缴多少钱", "12345.00"),
        ("ipo_allotment_notice", IPO_VARS, "最晚哪天要把钱存进去", "11月25日"),
        ("risk_assessment_expiry", {"risk_level": "C3稳健型", "expiry_date": "12月1日"}, "我现在测出来是啥等级", "C3稳健型"),
        ("service_followup", {"business_name": "创业板权限开通", "handle_date": "11月20日"}, "你说我办的是啥业务", "创业板权限开通"),
    ],
)
def test_a_question_about_the_call_is_answered_from_its_variables_then_the_step_resumes(
        product: dict[str, Any], scenario: str, variables: dict[str, Any], question: str, fact: str) -> None:
    sender = f"fact-{scenario}-{abs(hash(question)) % 10**8}"  # ASCII: the sender id goes into the URL
    start_call(product, sender, scenario, **variables)
    pending = texts(say(product, sender, "是我"))[-1]
    reply = texts(say(product, sender, question))
    assert len(reply) == 2, reply
    assert fact in reply[0] and "{" not in reply[0], "the caller's own figure, not the general FAQ"
    assert reply[1] == pending, "then the pending step is asked again"
    users = [t for t in conversation(product, sender)["turns"] if t["speaker"] == "user"]
    assert users[-1]["intent"].startswith("ask_") and conversation(product, sender)["outcome"] is None



def _paths_to_terminal_steps(scenario: str) -> dict[str, tuple[list[str], list[str]]]:
    """For each terminal step, the shortest sequence of intents that reaches it and the steps it passes,
    found with the script engine itself (so the second-refusal rule is respected); each intent is said by its
    standard question in the scenario, which the NLU matches exactly."""
    import collections

    from actions.script_engine import CallState, ScriptEngine, Step
    from knowledge_base.demo import demo_document

    doc = next(sc for sc in demo_document()["scenarios"] if sc["code"] == scenario)
    steps = [Step(st["code"], st["kind"], st["prompt"], st.get("reprompt") or "", st.get("transitions") or {},
                  bool(st.get("terminal")), st.get("outcome")) for st in doc["steps"]]
    engine = ScriptEngine(steps, {})
    sayable = {it["name"] for it in doc["intents"]}
    found: dict[str, tuple[list[str], list[str]]] = {}
    queue: collections.deque[list[str]] = collections.deque([[]])
    while queue:
        path = queue.popleft()
        state = CallState(scenario, "", {})
        engine.start(state)
        visited, ended = [state.step], False
        for intent in path:
            ended = engine.turn(state, intent).ended
            visited.append(state.step)
        if ended:
            if engine.steps[state.step].terminal:
                found.setdefault(state.step, (path, visited))
            continue
        if len(path) < 5:
            # stop_calling is honoured at any step by the engine's own rule, not by a transition.
            queue.extend(path + [i] for i in [*engine.steps[state.step].transitions, "stop_calling"] if i in sayable)
    return found


# What each demo terminal step declares (knowledge_base/demo/scenarios/*.yml), written out here on purpose.
DECLARED = {"closing": "completed", "callback_close": "callback", "wrong_person_close": "wrong_person", "refuse_close": "refused",
            "handoff": "handed_over", "complaint_close": "complained", "not_own_close": "disputed",
            "do_not_call_close": "do_not_call"}


@pytest.mark.parametrize("scenario", sorted(SCENARIO_CALLS))
def test_every_terminal_step_is_recorded_with_its_declared_outcome(product: dict[str, Any], scenario: str) -> None:
    from knowledge_base.demo import demo_document

    doc = next(sc for sc in demo_document()["scenarios"] if sc["code"] == scenario)
    terminal = {st["code"] for st in doc["steps"] if st.get("terminal")}
    phrase = {it["name"]: it["standard_question"] for it in doc["intents"]}
    confirm_steps = {st["code"] for st in doc["steps"] if st["kind"] == "confirm"}
    paths = _paths_to_terminal_steps(scenario)
    assert set(paths) == terminal, f"unreachable terminal steps: {sorted(terminal - set(paths))}"
    for step, (path, visited) in sorted(paths.items()):
        sender = f"matrix-{scenario}-{step}"
        start_call(product, sender, scenario, **SCENARIO_CALLS[scenario][0])
        for intent in path:
            say(product, sender, phrase[intent])
        record = conversation(product, sender)
        users = [t for t in record["turns"] if t["speaker"] == "user"]
        assert [t["intent"] for t in users] == path, (step, [(t["text"], t["intent"]) for t in users])
        expected = DECLARED[step]
        if expected == "completed" and any(s in confirm_steps and i == "affirm" for s, i in zip(visited, path, strict=False)):
            expected = "confirmed"  # the caller said yes to the call's confirm step
        if "not_own_handling" in visited:
            expected = "disputed"  # the dispute path marks the call, however it ends (a transfer included)
        assert record["outcome"] == expected, (step, path, record["outcome"])
        assert record["outcome_detail"]["final_step"] == step and record["ended_at"]
        assert bool(record["handed_over"]) == (step == "handoff")
        assert record["follow_up"] == ("open" if expected == "disputed" else None)


def test_a_dispute_heard_at_the_notice_step_reaches_staff_as_a_follow_up(product: dict[str, Any]) -> None:
    sender = "followup-dispute"
    start_call(product, sender, "service_followup", **SCENARIO_CALLS["service_followup"][0])
    say(product, sender, "是我")
    reply = texts(say(product, sender, "不是我办的，我没办过这个"))  # at "现在方便吗？", as the issue tried it
    assert reply and "核实" in reply[0] and "尊重您的意愿" not in reply[0], reply
    reply = say(product, sender, "好的")
    assert any(m.get("custom", {}).get("handoff") for m in reply), reply
    record = conversation(product, sender)
    assert record["outcome"] == "disputed" and record["handed_over"] == 1 and record["follow_up"] == "open"

    web = product["web"]
    status, listing = http("GET", web + "/conversations?follow_up=open")
    assert status == 200 and sender in [c["id"] for c in listing["conversations"]]
    status, stats = http("GET", web + "/conversations/stats?scenario=service_followup")
    assert status == 200 and stats["per_scenario"]["service_followup"]["disputed"] >= 1
    assert stats["open_follow_ups"] >= 1 and stats["total"]["disputed"] == sum(
        r.get("disputed", 0) for r in stats["per_scenario"].values())
    assert http("POST", web + f"/conversations/{sender}/follow-up", {"note": "  "})[0] == 400
    # Who closed it is the signed-in staff member (the admin token the tests use), not something the client claims.
    status, closed = http("POST", web + f"/conversations/{sender}/follow-up", {"note": "已与客户核实，系家属代办，客户已修改密码"},
                          headers={"X-Callbot-User": "wang.li", **as_staff(web)})
    assert status == 200 and closed["follow_up"]["status"] == "closed" and closed["follow_up"]["closed_by"] == STAFF_USER
    assert closed["outcome"] == "disputed", "closing the follow-up keeps what the call found"
    status, again = http("POST", web + f"/conversations/{sender}/follow-up", {"note": "again"})
    assert status == 400 and "already closed" in again["error"]
    status, listing = http("GET", web + "/conversations?follow_up=open")
    assert sender not in [c["id"] for c in listing["conversations"]]
    assert http("GET", web + "/conversations/stats?since=yesterday")[0] == 400


# Each way a customer or an ASR transcript writes a personal number, and its digits.
PERSONAL_NUMBERS = [
    ("我的手机号是+8613812345678", "13812345678"),
    ("打这个 +86 139 2345 6789 找我", "13923456789"),
    ("号码137-3456-7890", "13734567890"),
    ("你记一下136 4567 8901", "13645678901"),
    ("我手机号是一三五五六七八九零一二", "13556789012"),
    ("幺三四六七八九零幺二三", "13467890123"),
    ("身份证号11010519491231002X", "11010519491231002"),
    ("银行卡6222021234567890128帮我查一下", "622202123456789012"),
    ("卡号 4111 1111 1111 1111", "411111111111"),
]


def _digits_of(value: str) -> str:
    """A stored value as plain digits: Chinese numerals read out digit by digit become Arabic ones, separators go.
    JSON (Rasa's events, our JSON columns) is decoded first: it may hold Chinese as \\u escapes."""
    from callbot.pii import _DIGIT_VALUE

    with contextlib.suppress(ValueError):  # not JSON: searched as it is
        value = json.dumps(json.loads(value), ensure_ascii=False)
    return "".join(_DIGIT_VALUE.get(c, "") for c in value)


def test_no_full_personal_number_is_stored_anywhere(product: dict[str, Any]) -> None:
    """Chat and an outbound call carry every form; then every text cell of our database and of Rasa's tracker
    store, and every log file, are searched for the digits (longest run kept: the last four may stay)."""
    for i, (message, _digits) in enumerate(PERSONAL_NUMBERS):
        assert say(product, f"pii-chat-{i}", message), message
    sender = "pii-call"
    start_call(product, sender)
    say(product, sender, "在开车，回头说")
    say(product, sender, "明天下午打我另一个号13812345678吧")
    record = conversation(product, sender)
    assert record["outcome"] == "callback" and record["outcome_detail"]["callback_time"] == "明天下午打我另一个号138****5678吧"
    said = [t["text"] for t in conversation(product, "pii-chat-0")["turns"] if t["speaker"] == "user"]
    assert said == ["我的手机号是138****5678"], "masked, the last four kept for verification"

    stores = {"callbot": product["db"], "rasa tracker store": product["home"] / "rasa-tracker.db"}
    found: list[str] = []
    for label, path in stores.items():
        assert path.is_file(), path
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    plain = " ".join(_digits_of(c if isinstance(c, str) else c.decode("utf-8", "replace"))
                                     for c in row if isinstance(c, (str, bytes)))
                    found += [f"{label}.{table}: {digits}" for _m, digits in PERSONAL_NUMBERS if digits in plain]
    logs = list(product["home"].rglob("*.log"))
    assert logs, "the services write logs"
    for path in logs:
        plain = _digits_of(path.read_text(encoding="utf-8", errors="replace"))
        found += [f"{path.name}: {digits}" for _m, digits in PERSONAL_NUMBERS if digits in plain]
    assert not found, found
    # The tracker store did get the messages, masked (so the search above looked at the right place).
    with sqlite3.connect(stores["rasa tracker store"]) as db:
        events = " ".join(r[0] for r in db.execute("SELECT data FROM events WHERE type_name = 'user'"))
    assert "138****5678" in events and "***************0128" in events


def test_a_resent_turn_is_processed_once(product: dict[str, Any]) -> None:
    """A channel that got no answer resends the turn with the same turn id: the caller hears the first answer
    again, and the call does not move on a step (without the ledger the second 是的 would confirm the payment)."""
    sender = "resend-1"
    start_call(product, sender)
    body = {"sender": sender, "message": "是的", "metadata": {"turn_id": "resend-1-t1"}}
    first = http("POST", product["rasa"] + "/webhooks/rest/webhook", body)
    again = http("POST", product["rasa"] + "/webhooks/rest/webhook", body)
    assert first[0] == again[0] == 200
    assert texts(first[1]) and texts(again[1]) == texts(first[1])
    status, tracker = http("GET", product["rasa"] + f"/conversations/{sender}/tracker")
    assert status == 200
    assert [e["text"] for e in tracker["events"] if e["event"] == "user" and not e["text"].startswith("EXTERNAL")] == ["是的"]
    assert [t["text"] for t in conversation(product, sender)["turns"] if t["speaker"] == "user"] == ["是的"]
    nxt = http("POST", product["rasa"] + "/webhooks/rest/webhook",
               {"sender": sender, "message": "是的", "metadata": {"turn_id": "resend-1-t2"}})
    assert nxt[0] == 200 and texts(nxt[1]) != texts(first[1]), "a new turn id is a new turn"
