"""Mining extension questions from recorded caller turns, with the real e5 encoder over the demo KB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.models import Conversation, ConversationTurn, ExtensionQuestion, ReviewStatus, Scenario
from knowledge_base.service import KnowledgeBase
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.matcher import Matcher
from nlu.mining import caller_utterances, has_personal_data, mine
from tests.conftest import http, link_fresh_e5

ROOT = Path(__file__).resolve().parent.parent
NEW_WORDING = "请问我那个新股中了没有"  # faq_ipo_allotment_query, not in the demo KB


def record(store: Store, sender: str, scenario: str | None, *said: str) -> None:
    """A conversation as the action server records it: bot and caller turns."""
    with store.session("test") as s:
        sc = s.scalar(select(Scenario.id).where(Scenario.code == scenario)) if scenario else None
        conv = Conversation(external_id=sender, channel="chat", scenario_id=sc)
        s.add(conv)
        s.flush()
        seq = 0
        for text in said:
            seq += 1
            s.add(ConversationTurn(conversation_id=conv.id, seq=seq, speaker="bot", text="您好，请问有什么可以帮您？"))
            seq += 1
            s.add(ConversationTurn(conversation_id=conv.id, seq=seq, speaker="user", text=text))


@pytest.fixture
def matcher(kb: KnowledgeBase, demo_file: Path, e5_model_dir: Path, tmp_path: Path) -> Matcher:
    kb.import_files([demo_file])
    m = Matcher(kb.store, SentenceEncoder(e5_model_dir), tmp_path / "vectors", refresh_interval_s=0.0)
    m.refresh(force=True)
    return m


def test_personal_data_is_recognised() -> None:
    assert has_personal_data("我手机是138 1234 5678")
    assert has_personal_data("身份证11010119900307123X能开户吗")
    assert has_personal_data("验证码是一三八八") and has_personal_data("邮箱 a.b@example.com")
    assert not has_personal_data("我的新股中了500股吗") and not has_personal_data("开户要几天")


def test_mining_proposes_new_wordings_only(matcher: Matcher, kb: KnowledgeBase) -> None:
    store = kb.store
    faq = {i["name"]: i for i in kb.intents("faq")}
    repo = faq["faq_reverse_repo_how_to"]
    kb.add_question(repo["id"], "帮我查一下逆回购在哪买", author="staff", status=ReviewStatus.rejected)
    existing = kb.intent(faq["faq_open_account"]["id"])["extension_questions"][0]["text"]
    record(store, "c1", "faq", NEW_WORDING, "今天晚饭吃火锅还是烧烤呢")
    record(store, "c2", "faq", NEW_WORDING + "？", "我手机号13812345678开户要几天", "/affirm")
    record(store, "c3", "faq", existing, "帮我查一下逆回购在哪买", "   ", "好")
    report = mine(matcher, store, caller_utterances(store))

    assert report.utterances == 9
    proposed = {m.text: m for m in report.proposed}
    # Trailing punctuation aside, the same wording from two conversations is one proposal.
    top = report.proposed[0]
    assert top.text == NEW_WORDING, report.as_dict()
    assert top.intent == "faq_ipo_allotment_query" and top.conversations == 2 and top.occurrences == 2
    assert len(top.examples) == 2, "staff can open both conversations"
    assert not any("1381234" in t for t in proposed), "personal data is never proposed"
    assert existing not in proposed, "a wording the KB has is not proposed"
    assert "帮我查一下逆回购在哪买" not in proposed, "a rejected wording stays rejected"
    assert "今天晚饭吃火锅还是烧烤呢" not in proposed, "out-of-domain turns fall back"
    assert report.skipped["personal data"] == 1 and report.skipped["payload"] == 1
    assert report.skipped["empty"] == 1 and report.skipped["length"] == 1  # "   " and "好"
    assert report.skipped["fallback"] >= 1 and report.skipped["already known"] >= 2

    # Only wordings more conversations share, when asked: a one-off wording is noise to some teams.
    assert all(m.conversations >= 2 for m in mine(matcher, store, caller_utterances(store), min_conversations=2).proposed)
    # Scoped to one scenario's conversations.
    assert caller_utterances(store, scenario="ipo_allotment_notice") == []


def test_mine_command_queues_pending_questions_once(e5_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    link_fresh_e5(cache / "models", e5_model_dir)
    home = tmp_path / "home"
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(cache), "CALLBOT_HOME": str(home), "CALLBOT_NLU__MODEL": "e5-small"}
    callbot = str(Path(sys.executable).parent / "callbot")
    assert subprocess.run([callbot, "kb", "demo"], cwd=ROOT, env=env, capture_output=True).returncode == 0
    store = Store(f"sqlite:///{home / 'callbot.db'}")
    record(store, "call-1", "faq", NEW_WORDING)
    record(store, "call-2", "faq", NEW_WORDING)

    dry = subprocess.run([callbot, "nlu", "mine"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "1 proposal from 1 distinct wording (2 caller turns)" in dry.stdout and "--store" in dry.stdout
    report = json.loads(subprocess.run([callbot, "nlu", "mine", "--json"], cwd=ROOT, env=env, capture_output=True, text=True).stdout)
    assert [(m["text"], m["intent"], m["conversations"]) for m in report["proposed"]] == [(NEW_WORDING, "faq_ipo_allotment_query", 2)]
    with store.session() as s:
        assert s.scalar(select(ExtensionQuestion).where(ExtensionQuestion.text == NEW_WORDING)) is None, "a dry run stores nothing"

    stored = subprocess.run([callbot, "nlu", "mine", "--store"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert stored.returncode == 0, stored.stderr
    with store.session() as s:
        q = s.scalar(select(ExtensionQuestion).where(ExtensionQuestion.text == NEW_WORDING))
        assert q is not None and q.status == ReviewStatus.pending and q.source.value == "mined" and q.author == "miner"
        assert q.intent.name == "faq_ipo_allotment_query"
    again = subprocess.run([callbot, "nlu", "mine", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["proposed"] == [], "a queued wording is not proposed twice"

    bad = subprocess.run([callbot, "nlu", "mine", "--scenario", "nope"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "Scenario 'nope' does not exist" in bad.stderr


def chat_then_preview_mining(product: dict[str, Any], wording: str, senders: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Customers type ``wording`` in chat; the mining report that follows (nothing stored) and its proposal of ``wording``."""
    for sender in senders:
        status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": sender, "message": wording})
        assert status == 200 and reply, reply
    # Chat conversations have no scenario: they are re-matched across the knowledge base, as the bot matched them.
    status, report = http("POST", product["web"] + "/kb/mine", {"limit": 1000}, timeout=300)
    assert status == 200, report
    proposed = {m["text"]: m for m in report["proposed"]}
    assert wording in proposed, report
    return report, proposed[wording]


@pytest.mark.slow
def test_chat_wordings_reach_the_review_queue_through_the_api(dialogue_product: dict[str, Any]) -> None:
    product = dialogue_product
    wording = "怎么看自己中没中新股"  # e5: faq_ipo_allotment_query 0.974, runner-up 0.931
    report, mined = chat_then_preview_mining(product, wording, ("mine-1", "mine-2"))
    assert mined["conversations"] >= 2 and mined["intent"] == "faq_ipo_allotment_query", report

    status, report = http("POST", product["web"] + "/kb/mine", {"limit": 1000, "store": True}, timeout=300)
    assert status == 201 and wording in {q["text"] for q in report["stored"]}, report
    intent_id = mined["intent_id"]
    _, intent = http("GET", product["web"] + f"/kb/intents/{intent_id}")
    queued = next(q for q in intent["extension_questions"] if q["text"] == wording)
    assert queued["status"] == "pending" and queued["source"] == "mined"
    # Staff approve it: the next caller with that wording matches it exactly.
    status, _ = http("PATCH", product["web"] + f"/kb/questions/{queued['id']}", {"status": "approved"})
    assert status == 200
    deadline, matched = time.monotonic() + 5, None  # an edit reaches the index within the refresh interval
    while time.monotonic() < deadline and matched != wording:
        status, parsed = http("POST", product["web"] + "/nlu/parse", {"text": wording, "scenario": "faq"})
        matched = parsed["matched"]["question"]
        time.sleep(0.2)
    assert matched == wording

    status, bad = http("POST", product["web"] + "/kb/mine", {"since": "last tuesday"})
    assert status == 400 and "ISO date" in bad["error"]


@pytest.mark.slow
def test_admin_page_mines_chat_wordings_into_the_review_queue(dialogue_product: dict[str, Any]) -> None:
    """Staff in Chromium press 从通话挖掘问法: the customers' new wording lands as a pending question with a badge."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.browser import chromium, sign_in
    from tests.conftest import STAFF_PASSWORD, STAFF_USER

    product = dialogue_product
    wording = "我想把佣金降低一点可以吗"  # e5: faq_commission_reduce 0.974, runner-up 0.926
    preview, target = chat_then_preview_mining(product, wording, ("mine-ui-1", "mine-ui-2"))

    with chromium() as browser:
        wait = WebDriverWait(browser, 300, ignored_exceptions=(StaleElementReferenceException,))
        sign_in(browser, product["web"], STAFF_USER, STAFF_PASSWORD)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"#sc option[value={target['scenario']}]"))
        Select(browser.find_element(By.ID, "sc")).select_by_value(target["scenario"])
        item = f".it[data-id='{target['intent_id']}']"
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, item))
        assert not browser.find_element(By.ID, "mine-scoped").is_selected(), "chat turns have no scenario: mine them all"
        browser.find_element(By.ID, "mine").click()
        wait.until(lambda b: "新增待审核" in b.find_element(By.ID, "mine-msg").text)
        assert f"读取 {preview['utterances']} 句来电" in browser.find_element(By.ID, "mine-msg").text
        _, intent = http("GET", product["web"] + f"/kb/intents/{target['intent_id']}")
        queued = [q for q in intent["extension_questions"] if q["text"] == wording]
        assert queued and queued[0]["status"] == "pending" and queued[0]["source"] == "mined"
        assert queued[0]["author"] == STAFF_USER, "the signed-in reviewer"
        badge = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, item + " .badge"))[0]
        assert int(badge.text) == sum(q["status"] == "pending" for q in intent["extension_questions"]) >= 1
        # Pressing again proposes nothing new: the wording is known now, so nothing is stored twice.
        browser.find_element(By.ID, "mine").click()
        wait.until(lambda b: "新增待审核 0 条" in b.find_element(By.ID, "mine-msg").text)
