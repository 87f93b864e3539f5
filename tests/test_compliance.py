"""The compliance guard and `action_check_compliance` on a knowledge base of their own (no servers)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions import check_compliance, records
from actions.replies import PENDING_REPLIES, Outbox
from actions.script_engine import Say, fill
from knowledge_base.db import Store
from knowledge_base.models import ComplianceRule, Conversation, ConversationTurn
from knowledge_base.service import KnowledgeBase
from nlu.compliance.guard import ComplianceGuard

RULES = """schema_version: 1
compliance_rules:
  - {rule_id: T-BLOCK, pattern: 零风险, match_type: literal, severity: block}
  - {rule_id: T-REGEX, pattern: '(?<![不非])保本', match_type: regex, severity: block}
  - {rule_id: T-WARN, pattern: 稳赚, match_type: literal, severity: warn}
  - {rule_id: T-LITERAL-DOT, pattern: 翻.倍, match_type: literal, severity: block}
  - {rule_id: T-OFF, pattern: 收益高, match_type: literal, severity: block, enabled: false}
"""
SAFE_LINE = "这个问题请以本公司官方公告和产品说明书为准，投资有风险，入市需谨慎。"
DOMAIN = {"responses": {"utter_compliance_safe": [{"text": SAFE_LINE}]}}


@pytest.fixture
def rules_kb(kb: KnowledgeBase, tmp_path: Path) -> KnowledgeBase:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    kb.import_files([path])
    return kb


def test_block_warn_regex_literal_and_disabled_rules(rules_kb: KnowledgeBase) -> None:
    guard = ComplianceGuard(rules_kb.store)
    assert [v.rule_id for v in guard.blocks("这款产品零风险")] == ["T-BLOCK"]
    assert [v.rule_id for v in guard.blocks("它是保本的")] == ["T-REGEX"]
    assert guard.blocks("本产品不保本、非保本浮动收益") == [], "the regex spares the risk warning itself"
    warned = guard.check("买这个稳赚")
    assert [(v.rule_id, v.severity) for v in warned] == [("T-WARN", "warn")] and guard.blocks("买这个稳赚") == []
    assert guard.blocks("翻倍") == [] and [v.rule_id for v in guard.blocks("翻.倍")] == ["T-LITERAL-DOT"], \
        "a literal pattern is matched literally, not as a regular expression"
    assert guard.check("收益高") == [], "a disabled rule is not applied"


def test_a_customers_words_are_tagged_never_the_firms_violation(rules_kb: KnowledgeBase) -> None:
    guard = ComplianceGuard(rules_kb.store)
    texts = ["客户经理当时跟我说这个是保本的", "客户经理当时跟我说这个是保本的", "这款产品零风险", "你好"]
    firm, customer, bot, plain = guard.verdicts(texts, speakers=[None, "customer", "bot", "customer"])
    assert firm.violation and [h.rule_id for h in firm.hits] == ["T-REGEX"]
    assert not customer.violation and customer.hits == [] and "customer_mention" in customer.tags
    assert [h.rule_id for h in customer.mentions] == ["T-REGEX"], "what would be blamed on the firm is kept as a mention"
    shown = customer.as_dict()
    assert shown["speaker"] == "customer" and shown["mentions"][0]["rule"] == "T-REGEX" and shown["violation"] is False
    assert texts[1][shown["mentions"][0]["start"]:shown["mentions"][0]["end"]] == "保本"
    assert bot.violation and bot.speaker == "bot", "the bot's words are the firm's"
    assert not plain.violation and plain.tags == [] and "mentions" not in plain.as_dict()
    assert guard.verdict("你们能保本吗", speaker="user").tags == ["customer_mention"], "a transcript's user is the customer"
    with pytest.raises(ValueError, match="speakers"):
        guard.verdicts(["a", "b"], speakers=["customer"])


def test_a_rule_edit_is_applied_on_the_next_check(rules_kb: KnowledgeBase) -> None:
    guard = ComplianceGuard(rules_kb.store)
    assert guard.check("收益高") == []
    with rules_kb.store.session("compliance-officer") as s:
        s.scalar(select(ComplianceRule).where(ComplianceRule.rule_id == "T-OFF")).enabled = True
    assert [v.rule_id for v in guard.blocks("收益高")] == ["T-OFF"]
    with rules_kb.store.session("compliance-officer") as s:
        s.scalar(select(ComplianceRule).where(ComplianceRule.rule_id == "T-BLOCK")).severity = "warn"
    assert guard.blocks("零风险") == [] and [v.severity for v in guard.check("零风险")] == ["warn"]


def _tracker(sender: str, pending: list[dict[str, Any]], call_mode: str | None = None) -> Tracker:
    slots = {PENDING_REPLIES: pending, "call_mode": call_mode, "scenario": None}
    return Tracker(sender, slots, {"text": "", "intent": {"name": "faq"}}, [], False, None, {}, "action_listen")


@pytest.fixture
def action_store(rules_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The action reads the rules and writes the transcript through callbot.context.get_store: point it here."""
    monkeypatch.setattr(check_compliance, "get_store", lambda: rules_kb.store)
    monkeypatch.setattr(records, "get_store", lambda: rules_kb.store)
    # The lexicon alone here: these tests are about what the action does with a verdict (the classifier's own
    # behaviour is tested in tests/test_compliance_classifier.py).
    monkeypatch.setattr(check_compliance, "_guard", ComplianceGuard(rules_kb.store))
    return rules_kb.store


def _run(tracker: Tracker) -> tuple[CollectingDispatcher, list[dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(check_compliance.ActionCheckCompliance().run(dispatcher, tracker, DOMAIN))
    return dispatcher, events


def test_the_action_sends_clean_text_blocks_prohibited_text_and_records_both(action_store: Store) -> None:
    # What action_script_turn leaves pending: prompts with the call's variables already filled in.
    variables = {"product": "零风险理财", "stock_name": "华安科技"}
    box = Outbox(DOMAIN, variables)
    box.say(Say(fill("您中签的是{stock_name}，请按时缴款。", variables)))
    box.say(Say(fill("另外给您推荐{product}。", variables)))  # prohibited only once the variable is filled
    box.say(Say("您想问哪一个？"), buttons=[{"title": "保本理财怎么买", "payload": "/faq"}, {"title": "逆回购", "payload": "/faq"}])
    box.custom({"handoff": True})
    pending = box.events()[0]["value"]
    dispatcher, events = _run(_tracker("comp-1", pending, "outbound"))
    sent = dispatcher.messages
    assert [m.get("text") for m in sent[:3]] == ["您中签的是华安科技，请按时缴款。", SAFE_LINE, "您想问哪一个？"]
    assert sent[2]["buttons"][0]["title"] == "保本理财怎么买", "buttons go out with their message"
    assert sent[3]["custom"] == {"handoff": True} and sent[3].get("text") is None
    assert {"event": "slot", "name": PENDING_REPLIES, "value": None, "timestamp": None} in events
    assert events[-1]["event"] == "followup" and events[-1]["name"] == "action_record_outcome"
    with action_store.session() as s:
        conv = s.scalar(select(Conversation).where(Conversation.external_id == "comp-1"))
        assert conv.channel == "outbound"
        blocked = conv.outcome_detail["compliance_blocked"]
        assert blocked == [{"rules": ["T-BLOCK"], "text": "另外给您推荐零风险理财。"}]
        turns = [t.text for t in s.scalars(select(ConversationTurn).where(ConversationTurn.conversation_id == conv.id))]
    assert turns == ["您中签的是华安科技，请按时缴款。", SAFE_LINE, "您想问哪一个？"], "the transcript holds what was said"


def test_a_blocked_line_with_a_personal_number_is_noted_masked(action_store: Store) -> None:
    dispatcher, _ = _run(_tracker("comp-2", [{"text": "零风险，有问题打13812345678"}]))
    assert [m["text"] for m in dispatcher.messages] == [SAFE_LINE]
    with action_store.session() as s:
        detail = s.scalar(select(Conversation).where(Conversation.external_id == "comp-2")).outcome_detail
    assert json.dumps(detail, ensure_ascii=False).count("13812345678") == 0
    assert detail["compliance_blocked"][0]["text"] == "零风险，有问题打138****5678"


def test_a_warned_line_is_sent_and_flagged_for_review(action_store: Store) -> None:
    dispatcher, _ = _run(_tracker("comp-warn", [{"text": "买这个稳赚，您考虑一下。"}, {"text": "请按时缴款。"}]))
    assert [m["text"] for m in dispatcher.messages] == ["买这个稳赚，您考虑一下。", "请按时缴款。"], "a warn rule does not block"
    with action_store.session() as s:
        detail = s.scalar(select(Conversation).where(Conversation.external_id == "comp-warn")).outcome_detail
    assert detail["compliance_flagged"] == [{"rules": ["T-WARN"], "text": "买这个稳赚，您考虑一下。"}]
    # The same line said twice more in the conversation is counted, not listed again; another line gets its own entry.
    _run(_tracker("comp-warn", [{"text": "买这个稳赚，您考虑一下。"}]))
    _run(_tracker("comp-warn", [{"text": "买这个稳赚，您考虑一下。"}, {"text": "这个也稳赚。"}]))
    with action_store.session() as s:
        detail = s.scalar(select(Conversation).where(Conversation.external_id == "comp-warn")).outcome_detail
    assert detail["compliance_flagged"] == [{"rules": ["T-WARN"], "text": "买这个稳赚，您考虑一下。", "times": 3},
                                            {"rules": ["T-WARN"], "text": "这个也稳赚。"}]
    assert "compliance_blocked" not in detail


def test_nothing_pending_sends_nothing_and_records_nothing(action_store: Store) -> None:
    dispatcher, events = _run(_tracker("comp-3", []))
    assert dispatcher.messages == [] and [e["event"] for e in events] == ["followup"]
    with action_store.session() as s:
        assert s.scalar(select(Conversation).where(Conversation.external_id == "comp-3")) is None
