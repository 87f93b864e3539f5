"""Import validation (every problem, with file and line; nothing written) and export round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from knowledge_base.errors import ImportRejected
from knowledge_base.service import KnowledgeBase

DIALOGUE_INTENTS = ["affirm", "deny", "busy", "wrong_person", "ask_identity", "ask_purpose", "request_human", "complain", "goodbye"]


def test_demo_content_meets_the_brief(kb: KnowledgeBase, demo_file: Path) -> None:
    kb.import_files([demo_file])
    doc = json.loads(kb.export("json"))
    scenarios = {s["code"]: s for s in doc["scenarios"]}
    outbound = [s for s in scenarios.values() if s["kind"] == "outbound"]
    assert {"ipo_allotment_notice", "risk_assessment_expiry", "service_followup"} <= set(scenarios)
    for sc in outbound:
        kinds = {st["kind"] for st in sc["steps"]}
        assert {"identity_check", "notice", "confirm", "closing"} <= kinds, sc["code"]
        codes = {st["code"] for st in sc["steps"]}
        assert {"busy_close", "wrong_person_close", "refuse_close", "handoff", "complaint_ack"} <= codes, sc["code"]
        intents = {it["name"]: it for it in sc["intents"]}
        for name in DIALOGUE_INTENTS:
            assert len(intents[name]["extension_questions"]) >= 15, (sc["code"], name)
        assert intents["ask_identity"]["answer"] and intents["ask_purpose"]["answer"]
    faq = [it for it in scenarios["faq"]["intents"] if it["kind"] == "faq"]
    assert len(faq) >= 40
    assert all(len(it["extension_questions"]) >= 8 and it["answer"] for it in faq)
    assert len(doc["compliance_rules"]) >= 20 and len(doc["complaint_labels"]) >= 20
    # Scene-scoped meaning: the same words differ by scenario where the script says so.
    ipo = {q["text"]: it["name"] for it in scenarios["ipo_allotment_notice"]["intents"] for q in it["extension_questions"]}
    assert ipo.get("找他干嘛") == "wrong_person" and ipo.get("找我干嘛") == "ask_purpose"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_import_round_trip(kb: KnowledgeBase, demo_file: Path, tmp_path: Path, fmt: str, store_factory) -> None:  # type: ignore[no-untyped-def]
    kb.import_files([demo_file])
    exported = kb.export(fmt)
    path = tmp_path / f"kb.{fmt}"
    path.write_text(exported, encoding="utf-8")
    other = KnowledgeBase(store_factory())
    report = other.import_files([path])
    assert not report.updated
    assert other.export(fmt) == exported


def test_csv_round_trip_adds_questions(kb: KnowledgeBase, demo_file: Path, tmp_path: Path) -> None:
    kb.import_files([demo_file])
    csv_text = kb.export("csv", scenario="faq")
    lines = csv_text.splitlines()
    assert lines[0] == "scenario,intent,kind,standard_question,answer,text,source,status,author"
    before = kb.counts()
    # Add one question to an existing intent by appending a row.
    first = lines[1].split(",")
    new_row = ",".join([*first[:5], "请问一下怎么开户呀老师", "manual", "pending", "csv-user"])
    path = tmp_path / "add.csv"
    path.write_text("\n".join([lines[0], lines[1], new_row]) + "\n", encoding="utf-8")
    kb.import_files([path])
    after = kb.counts()
    assert after.extension_questions == before.extension_questions + 1
    assert after.version == before.version + 1


def _rejected(kb: KnowledgeBase, path: Path) -> list[str]:
    version, counts = kb.store.kb_version(), kb.counts()
    with pytest.raises(ImportRejected) as info:
        kb.import_files([path])
    assert kb.store.kb_version() == version and kb.counts() == counts, "a rejected import must write nothing"
    return info.value.problems


BAD_SCENARIO = """\
schema_version: 1
scenarios:
  - code: notice_x
    name: 测试
    kind: outbound
    variables: [customer_name]
    steps:
      - code: opening
        kind: identity_check
        prompt: 您好，{customer_name}，您的{amount}元
        expected_intents: [affirm, shrug]
        transitions: {affirm: nowhere}
    intents:
      - name: affirm
        standard_question: 是的
        extension_questions: [嗯, 嗯]
compliance_rules:
  - rule_id: CR-X
    pattern: "保本("
    match_type: regex
"""


def test_every_problem_is_reported_with_its_line(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SCENARIO, encoding="utf-8")
    problems = "\n".join(_rejected(kb, path))
    assert f"{path}:10: scenarios[0].steps[0].prompt: variable {{amount}}" in problems  # undeclared variable
    assert f"{path}:11: scenarios[0].steps[0].expected_intents: intent 'shrug'" in problems  # unknown intent
    assert f"{path}:12:" in problems and "'nowhere'" in problems  # transition to a missing step
    assert "duplicate extension question '嗯'" in problems
    assert f"{path}:19: compliance_rules[0].pattern: regular expression does not compile" in problems


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b"schema_version: 1\nscenarios: [\n", "YAML syntax error"),
        ("scenario,intent\n测试,x\n".encode("gbk"), "not valid UTF-8"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"schema_version: 2\n", "schema_version must be 1"),
        (b"schema_version: 1\nscenarios:\n  - code: x1\n    name: n\n    kind: outbound\n    colour: red\n", "unknown field"),
    ],
    ids=["empty", "binary", "yaml-syntax", "gbk", "not-a-mapping", "schema-version", "unknown-field"],
)
def test_bad_files_are_rejected_clearly(kb: KnowledgeBase, tmp_path: Path, content: bytes, expected: str) -> None:
    suffix = ".csv" if expected == "not valid UTF-8" else ".yaml"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    problems = _rejected(kb, path)
    assert any(expected in p and str(path) in p for p in problems), problems


def test_json_errors_have_lines(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "schema_version": 1,\n  "scenarios": [\n    {"code": "ok_code", "name": "", "kind": "outbound"}\n  ]\n}\n')
    problems = _rejected(kb, path)
    assert any(f"{path}:4:" in p and "name" in p for p in problems), problems
    path.write_text('{"schema_version": 1,\n "scenarios": [,]}')
    assert any(f"{path}:2:" in p and "JSON syntax error" in p for p in _rejected(kb, path))


def test_csv_needs_an_existing_scenario_and_valid_rows(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("scenario,intent,kind,standard_question,answer,text,source,status,author\n"
                    "nope,faq_x,faq,问,答,问问,manual,approved,a\n", encoding="utf-8")
    assert any("scenario 'nope' does not exist" in p for p in _rejected(kb, path))
    path.write_text("scenario,intent,text\nfaq,x\n", encoding="utf-8")
    assert any("missing column(s) standard_question" in p for p in _rejected(kb, path))


def test_one_bad_file_blocks_the_whole_batch(kb: KnowledgeBase, demo_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\ncompliance_rules:\n  - rule_id: R1\n", encoding="utf-8")
    problems = _rejected(kb, bad)
    assert any("pattern" in p for p in problems)
    version = kb.store.kb_version()
    with pytest.raises(ImportRejected):
        kb.import_files([demo_file, bad])
    assert kb.counts().scenarios == 0 and kb.store.kb_version() == version


def test_huge_text_field_is_rejected(kb: KnowledgeBase, tmp_path: Path) -> None:
    doc = {"schema_version": 1, "compliance_rules": [{"rule_id": "R1", "pattern": "字" * 5000}]}
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert any("at most 2000" in p for p in _rejected(kb, path))


STEP_OUTCOMES = """schema_version: 1
scenarios:
  - code: tiny_call
    name: 小场景
    kind: outbound
    steps:
      - code: ask
        prompt: 方便吗？
        transitions: {affirm: done, deny: nowhere_close}
      - code: done
        kind: closing
        prompt: 再见
        terminal: true
        outcome: completed
      - code: nowhere_close
        kind: closing
        prompt: 再见
        terminal: true
      - code: odd_close
        kind: closing
        prompt: 再见
        terminal: true
        outcome: happy
    intents:
      - {name: affirm, standard_question: 好的}
      - {name: deny, standard_question: 不要}
"""


def test_terminal_steps_must_declare_a_known_outcome(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "outcomes.yaml"
    path.write_text(STEP_OUTCOMES, encoding="utf-8")
    problems = "\n".join(_rejected(kb, path))
    assert f"{path}:23: scenarios[0].steps[3].outcome:" in problems and "'disputed'" in problems  # unknown: the known listed
    path.write_text(STEP_OUTCOMES.replace("outcome: happy", "outcome: refused"), encoding="utf-8")
    problems = "\n".join(_rejected(kb, path))
    assert f"{path}:18: scenarios[0].steps[2].terminal: terminal step 'nowhere_close' has no outcome" in problems
    assert "disputed" in problems  # the message lists the outcomes a step may declare
    fixed = STEP_OUTCOMES.replace("        terminal: true\n      - code: odd_close", "        terminal: true\n        outcome: refused\n"
                                  "      - code: odd_close").replace("outcome: happy", "outcome: disputed")
    path.write_text(fixed, encoding="utf-8")
    kb.import_files([path])
    exported = yaml.safe_load(kb.export("yaml", "tiny_call"))
    steps = {s["code"]: s for s in exported["scenarios"][0]["steps"]}
    assert steps["nowhere_close"]["outcome"] == "refused" and steps["odd_close"]["outcome"] == "disputed"
    assert "outcome" not in steps["ask"]
