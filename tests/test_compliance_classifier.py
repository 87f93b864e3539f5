"""The compliance guard with its classifier: sentences and spans, the lexicon overruled in context, paraphrases caught,
customer questions tagged, long and odd input; the CLI's check and eval. A head is trained once per test session on
the project's training data (nlu/compliance/data/train_*.jsonl), a few epochs only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knowledge_base.service import KnowledgeBase
from nlu.compliance.classifier import DATA_DIR, TRAIN_FILES, HeadConfig, load_examples, save_head, train_head
from nlu.compliance.clauses import split_clauses
from nlu.compliance.guard import ComplianceGuard
from tests.conftest import ROOT, link_fresh_e5

CALLBOT = str(Path(sys.executable).parent / "callbot")


@pytest.fixture(scope="module")
def encoder(e5_model_dir: Path):  # type: ignore[no-untyped-def]
    """The encoder the product serves the guard with (the released ALBERT-sim), from the user's cache."""
    from callbot.settings import get_settings
    from nlu.compliance.service import compliance_encoder

    return compliance_encoder(get_settings().models_dir)


@pytest.fixture(scope="module")
def head_dir(encoder, tmp_path_factory: pytest.TempPathFactory, demo_file: Path) -> Path:  # type: ignore[no-untyped-def]
    from knowledge_base.db import Store
    from nlu.compliance.lexicon import RuleLexicon

    store = Store(f"sqlite:///{tmp_path_factory.mktemp('rules') / 'kb.db'}")
    store.migrate()
    KnowledgeBase(store).import_files([demo_file])
    lexicon = RuleLexicon(store)
    examples = load_examples([DATA_DIR / f for f in TRAIN_FILES])
    pool = ["请您按时缴款。", "今天天气不错。", "本产品风险等级为R3。", "您的风险测评将于下月到期。"] * 10
    trained = train_head(encoder, examples, pool, HeadConfig(epochs=25, pool_size=40),
                         lexicon_matches=lambda t: lexicon.scan(t))
    assert "override_below" in trained.meta
    assert trained.meta["cv_f1"] > 0.8, trained.meta
    return save_head(trained, tmp_path_factory.mktemp("compliance"))


@pytest.fixture
def guard(kb: KnowledgeBase, demo_file: Path, encoder, head_dir: Path) -> ComplianceGuard:  # type: ignore[no-untyped-def]
    kb.import_files([demo_file])
    g = ComplianceGuard(kb.store, encoder, head_dir)
    assert g.uses_classifier
    return g


def test_sentences_keep_their_offsets_and_long_ones_are_windowed() -> None:
    text = "您好，这里是客服。" + "这" * 200 + "。最后一句话！"
    clauses = split_clauses(text)
    for c in clauses:
        assert text[c.start:c.end] == c.text
    assert clauses[0].text == "您好，这里是客服。" and clauses[-1].text == "最后一句话！"
    assert max(len(c.text) for c in clauses) <= 80 and len(clauses) >= 5
    assert split_clauses("") == [] and split_clauses("   ") == []


def test_the_lexicon_alone_reports_rule_and_exact_span(kb: KnowledgeBase, demo_file: Path) -> None:
    kb.import_files([demo_file])
    lexicon_only = ComplianceGuard(kb.store)
    text = "您好。这款产品零风险，放心买。"
    hits = lexicon_only.check(text)
    assert hits and all(text[h.start:h.end] == h.matched for h in hits)
    assert "CR-003" in {h.rule_id for h in hits}


def test_a_promised_yearly_figure_is_a_lexicon_hit_in_its_usual_word_orders(kb: KnowledgeBase, demo_file: Path) -> None:
    kb.import_files([demo_file])
    lexicon_only = ComplianceGuard(kb.store)
    for text in ("本期收益凭证年化保证6.5%，到期还本付息。", "年化收益保证不低于5.5%", "年化收益率保底4个点", "收益率固定在百分之五"):
        assert "CR-009" in {h.rule_id for h in lexicon_only.check(text)}, text
    for text in ("这个产品年化不保证6%。", "业绩比较基准年化4.5%，不代表实际收益。", "年化收益可能在3%左右。"):
        assert "CR-009" not in {h.rule_id for h in lexicon_only.check(text)}, text
    assert "CR-039" in {h.rule_id for h in lexicon_only.check("本理财产品承诺年化收益率不低于5.2%。")}
    for text in ("我们不承诺年化收益率4%。", "我们不能承诺收益达到5%。"):
        assert "CR-039" not in {h.rule_id for h in lexicon_only.check(text)}, text
    assert "CR-040" in {h.rule_id for h in lexicon_only.check("本产品属于储蓄类产品，享受存款保险保障。")}
    for text in ("这款理财不是存款，不受存款保险保障。", "银行存款受存款保险保护，理财产品没有。"):
        assert "CR-040" not in {h.rule_id for h in lexicon_only.check(text)}, text


def test_paraphrases_are_caught_and_negations_pass(guard: ComplianceGuard) -> None:
    caught = guard.verdict("您就放心吧，本钱一分都少不了，年底至少给您做到百分之七。")
    assert caught.violation and {h.source for h in caught.hits} == {"classifier"}
    assert all(h.rule_id.startswith("CS-") for h in caught.hits)
    warning = guard.verdict("这只基金不承诺保本，市场波动时净值可能下跌。")
    assert not warning.violation, warning.as_dict()
    assert guard.verdict("好的，请您在周五前完成缴款。").hits == []


def test_a_customer_question_is_tagged_not_blocked(guard: ComplianceGuard) -> None:
    v = guard.verdict("这个会不会亏啊？你们能保证收益吗？")
    assert not v.violation and v.tags == ["customer_question"]


def test_a_violation_deep_in_a_long_text_is_found_with_its_span(guard: ComplianceGuard) -> None:
    filler = "请您仔细阅读产品说明书和风险揭示书。" * 300
    text = filler + "这个产品保本保收益，零风险。" + filler
    v = guard.verdict(text)
    assert v.violation and not v.truncated
    spans = [text[h.start:h.end] for h in v.hits]
    assert any("保本保收益" in s for s in spans) and all(h.start >= len(filler) for h in v.hits)


def test_empty_odd_and_huge_input(guard: ComplianceGuard) -> None:
    verdicts = guard.verdicts(["", "   ", "OK 👍 😀", "保本" * 20_000, "Ｒ３级产品，T+1到账。"])
    assert [v.violation for v in verdicts[:3]] == [False, False, False]
    assert verdicts[3].truncated and verdicts[3].violation
    assert not verdicts[4].violation


def test_the_rules_scan_past_the_classifiers_limit_and_overlaps_count_once(guard: ComplianceGuard) -> None:
    from nlu.compliance.guard import MAX_CHARS

    filler = "请您仔细阅读产品说明书。" * (MAX_CHARS // 12 + 50)
    text = filler + "这个产品保本保收益。"
    v = guard.verdict(text)
    assert v.truncated and v.violation, "a violation after the classifier's limit is still found by the rules"
    assert all(text[h.start:h.end] in "这个产品保本保收益。" for h in v.hits)
    # One long sentence (no full stop) is judged in overlapping windows: its phrases are reported once each.
    long_sentence = "您好" * 40 + "这个产品保本" + "，" * 30 + "请放心"
    hits = guard.verdict(long_sentence).hits
    assert len({(h.rule_id, h.start, h.end) for h in hits}) == len(hits) and hits


def test_a_warn_rule_blocks_when_the_classifier_is_sure(guard: ComplianceGuard) -> None:
    # 翻番 and 赶紧买 are `warn` rules (fair talk uses the words too); said as a promise, a classifier sure of the
    # violation blocks them. This session's small head is less sure than the shipped one: the bar is set just under
    # its own score, which must still be a violation by its cross-validated threshold.
    # Whether it blocks follows the severity of the semantic rule of the class the head picks (promised_return blocks,
    # exaggeration only warns; "肯定翻番" sits between the two and small heads pick either): at least one must block.
    assert guard.head is not None
    blocked = 0
    for text in ("这只票下周一定翻番，机不可失赶紧买！", "跟着我们买，这只股今年肯定翻番，错过就没机会了。"):
        v = guard.verdict(text)
        assert not v.blocking() or guard.block_confidence <= min(h.score for h in v.hits)
        p_violation = min(h.score for h in v.hits if h.source == "lexicon")
        assert p_violation >= guard.head.threshold, v.as_dict()
        guard.block_confidence = p_violation - 1e-3
        sure = guard.verdict(text)
        semantic = [h for h in sure.hits if h.source == "classifier"]
        severity = {r.rule_id: r.severity for r in guard.lexicon.semantic.values()}  # loaded by the first check
        assert len(semantic) == 1 and semantic[0].severity == severity[semantic[0].rule_id], sure.as_dict()
        assert {h.source for h in sure.blocking()} <= {"classifier"}, sure.as_dict()
        blocked += bool(sure.blocking())
        assert [h.rule_id for h in sure.hits if h.source == "lexicon"] == [h.rule_id for h in v.hits if h.source == "lexicon"]
        guard.block_confidence = min(1.0, p_violation + 1e-3)
        assert not guard.verdict(text).blocking(), "below the bar the warn rules only warn"
        guard.block_confidence = 0.9
    assert blocked >= 1, "a sure classifier never turned a warn rule into a block"
    fair = guard.verdict("有的股票一年翻番，也有的腰斩，请理性看待，不要追涨杀跌。")
    assert not fair.blocking(), fair.as_dict()


def test_a_disabled_semantic_rule_switches_its_class_off(guard: ComplianceGuard, kb: KnowledgeBase) -> None:
    from sqlalchemy import select

    from knowledge_base.models import ComplianceRule

    text = "您放心，本钱一分都少不了。"
    before = guard.verdict(text)
    assert before.violation
    with kb.store.session("compliance-officer") as s:
        for rule in s.scalars(select(ComplianceRule).where(ComplianceRule.rule_id.in_([h.rule_id for h in before.hits]))):
            rule.enabled = False  # as the staff console edits it (the knowledge-base version moves)
    assert [h.rule_id for h in guard.verdict(text).hits if h.rule_id in {x.rule_id for x in before.hits}] == []


def test_a_head_trained_on_another_encoders_vectors_is_not_used(encoder, head_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from nlu.compliance.classifier import META_FILE, load_head

    assert load_head(head_dir, encoder.dim, encoder.cache_id) is not None
    other = tmp_path / "other"
    shutil.copytree(head_dir, other)
    meta = json.loads((other / META_FILE).read_text())
    assert meta["encoder_id"] == encoder.cache_id
    meta["encoder_id"] = "e5-small-v1-0000000-int8"  # as if the release changed, or the setting did, after training
    (other / META_FILE).write_text(json.dumps(meta))
    assert load_head(other, encoder.dim, encoder.cache_id) is None, "a head must not read vectors it was not trained on"


def test_cli_check_and_eval(guard: ComplianceGuard, head_dir: Path, tmp_path: Path, e5_model_dir: Path) -> None:
    home, cache = tmp_path / "home", tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    link_fresh_e5(cache / "models", e5_model_dir)
    from callbot.settings import get_settings
    from nlu.compliance.service import base_encoder_path

    base = base_encoder_path(get_settings().models_dir)
    if base.name != "e5-small-v1":
        (cache / "models" / base.name).symlink_to(base)
    (cache / "compliance").mkdir()
    for f in head_dir.iterdir():
        (cache / "compliance" / f.name).symlink_to(f)
    if guard.encoder.path != base:  # the encoder adapted to sales talk, built from that base
        (cache / "compliance" / "encoder").symlink_to(guard.encoder.path)
    env = {**os.environ, "CALLBOT_HOME": str(home), "CALLBOT_CACHE_DIR": str(cache), "COLUMNS": "300"}
    assert subprocess.run([CALLBOT, "kb", "demo"], cwd=ROOT, env=env, capture_output=True).returncode == 0
    lines = tmp_path / "lines.txt"
    lines.write_text("这款产品零风险。\n\n这只基金不承诺保本。\n本钱一分都少不了。\n", encoding="utf-8")
    done = subprocess.run([CALLBOT, "compliance", "check", "--input", str(lines)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["这款产品零风险。", "", "这只基金不承诺保本。", "本钱一分都少不了。"]
    assert [r["violation"] for r in rows] == [True, False, False, True]
    first = rows[0]["hits"][0]
    assert {"rule", "severity", "start", "end", "score"} <= set(first) and rows[0]["text"][first["start"]:first["end"]] == "零风险"
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (
        {"text": "保证年化8%，亏了算我的。", "violation": True, "speaker": "agent"},
        {"text": "本产品不保本。", "violation": False, "speaker": "agent"},
        {"text": "跟存银行定期一样稳当。", "violation": True, "speaker": "agent"},
        {"text": "这款产品零风险。", "violation": False, "speaker": "customer"})), encoding="utf-8")
    done = subprocess.run([CALLBOT, "compliance", "eval", "--test", str(test)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[0])
    assert report["n"] == 4 and set(report["guard"]) >= {"precision", "recall", "f1"} and "lexicon_only" in report
    # As served, the customer's 零风险 is tagged, not flagged; speaker-blind it is a false positive of both.
    assert report["speakers"] == {"agent": 3, "customer": 1} and report["customer_lines_tagged"] == 1
    assert report["guard"]["fp"] == 0 and report["guard_speaker_blind"]["fp"] == 1
    assert report["lexicon_only"]["fp"] == 0 and report["lexicon_only_speaker_blind"]["fp"] == 1
    binary = tmp_path / "x.txt"
    binary.write_bytes(b"\x00\x01\x02")
    bad = subprocess.run([CALLBOT, "compliance", "check", "--input", str(binary)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "binary file" in bad.stderr and "Traceback" not in bad.stderr
    # The knowledge base's gate: an answer the guard blocks is not published, and the import says where and why.
    bad_kb = tmp_path / "bad.yaml"
    bad_kb.write_text("""schema_version: 1
scenarios:
  - code: faq
    name: 常见问题
    kind: inbound
    intents:
      - name: faq_new_product
        kind: faq
        standard_question: 新出的理财怎么样
        answer: 这款新理财零风险，放心买。
""", encoding="utf-8")
    rejected = subprocess.run([CALLBOT, "kb", "import", str(bad_kb)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert rejected.returncode == 3, rejected.stderr
    assert "intent faq_new_product, answer: CR-003" in rejected.stderr and "零风险" in rejected.stderr
    fixed = bad_kb.read_text(encoding="utf-8").replace("这款新理财零风险，放心买。", "这款理财为R2风险等级，不保本，净值会波动。")
    bad_kb.write_text(fixed, encoding="utf-8")
    accepted = subprocess.run([CALLBOT, "kb", "import", str(bad_kb)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    # Stored transcripts flagged for review: the bot's (or staff's) violation is listed, the customer's question tagged.
    from knowledge_base.db import Store
    from knowledge_base.models import Conversation, ConversationTurn

    store = Store(f"sqlite:///{home / 'callbot.db'}")
    with store.session() as s:
        conv = Conversation(external_id="review-1", channel="chat")
        s.add(conv)
        s.flush()
        s.add_all([ConversationTurn(conversation_id=conv.id, seq=1, speaker="user", text="这个会不会亏啊？"),
                   ConversationTurn(conversation_id=conv.id, seq=2, speaker="bot", text="您放心，这款零风险。"),
                   ConversationTurn(conversation_id=conv.id, seq=3, speaker="bot", text="请您按时完成风险测评。")])
    done = subprocess.run([CALLBOT, "compliance", "review"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "1 with wording to review" in done.stdout, done.stdout + done.stderr
    with store.session() as s:
        review = s.query(Conversation).filter_by(external_id="review-1").one().outcome_detail["compliance_review"]
    assert [(r["seq"], r["customer"]) for r in review] == [(1, True), (2, False)]
    assert review[0]["tags"] == ["customer_question"] and "CR-003" in review[1]["rules"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "x"}\n', encoding="utf-8")
    bad = subprocess.run([CALLBOT, "compliance", "eval", "--test", str(broken)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "broken.jsonl:1" in bad.stderr


def test_a_lexicon_hit_is_overruled_only_where_the_sentence_could_be_a_mention() -> None:
    from nlu.compliance.mention import mention_cue

    assert mention_cue("这只基金不承诺保本。", [(7, 9)])
    assert mention_cue("谁跟您说零风险您都别信", [(4, 7)])
    assert mention_cue("没有'最后名额'这一说", [(3, 7)])
    assert not mention_cue("保本保本保本保本", [(0, 2)]), "degenerate text gives no reason"
    assert not mention_cue("稳赚不赔！", [(0, 4)]), "the matched words' own 不 is not a cue"
    assert not mention_cue("这款产品绝对稳赚不赔，放心买", [(6, 10)])
    # 不过 is "however", not a negation: the concession before it does not make 零风险 a mention
    assert not mention_cue("确实有平仓线，不过照我说的做，基本上是零风险的", [(19, 22)])
    assert mention_cue("不过，没有任何产品是零风险的", [(10, 13)]), "the 没 still is"
    # Reporting and enforcement words: the practice is named to be stopped
    assert mention_cue("如有人以我司名义承诺年化百分之二十的收益，请直接拨打客服电话举报。", [(8, 10)])
    assert mention_cue("某营业部因员工承诺保底收益，被证监局出具警示函。", [(7, 11)])
    assert not mention_cue("这个产品保底收益，您放心买", [(4, 8)])


def test_a_repeated_bot_line_is_scored_once_and_judged_the_same(guard: ComplianceGuard) -> None:
    encoded: list[str] = []
    real = guard.encoder

    class CountingEncoder:
        dim = real.dim

        def encode(self, texts: list[str]):  # type: ignore[no-untyped-def]
            encoded.extend(texts)
            return real.encode(texts)

    guard.encoder = CountingEncoder()
    line = "您好，这款产品年化收益稳定在百分之八。请问您还有其他问题吗？"
    first = guard.verdict(line).as_dict()
    assert first["violation"] and len(encoded) == 2  # two sentences
    again = guard.verdicts([line, "好的，请您在周五前完成缴款。"])
    assert again[0].as_dict() == first
    assert encoded[2:] == ["好的，请您在周五前完成缴款。"], "only the new sentence is encoded"


def test_the_operating_point_keeps_recall_at_the_floor_and_is_then_as_precise_as_it_can_be() -> None:
    import numpy as np

    from nlu.compliance.classifier import guard_thresholds

    rng = np.random.default_rng(0)
    truth = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    # Violations score high with a tail of low ones; compliant lines mostly low with some high: no point has both.
    scores = np.r_[np.clip(rng.normal(0.75, 0.2, 200), 0, 1), np.clip(rng.normal(0.25, 0.2, 200), 0, 1)]
    lexical = np.zeros(400, bool)

    def at(t: float) -> tuple[float, float]:
        pred = scores >= t
        return (pred & truth).sum() / max(pred.sum(), 1), (pred & truth).sum() / truth.sum()

    t_f1, _, by_f1 = guard_thresholds(scores, lexical, truth, recall_floor=1.01)  # unreachable: the best F1
    assert by_f1["recall_floor_met"] is False and by_f1["cv_recall"] < 0.97
    t, _, chosen = guard_thresholds(scores, lexical, truth)
    assert chosen["recall_floor_met"] and chosen["cv_recall"] >= 0.97 and t < t_f1, "recall bought with a lower threshold"
    assert (chosen["cv_precision"], chosen["cv_recall"]) == pytest.approx(at(t), abs=1e-4)
    # Nothing on the grid with recall at the floor is more precise.
    grid = [round(x, 3) for x in np.arange(0.2, 0.81, 0.025)]
    assert all(at(x)[0] <= chosen["cv_precision"] + 1e-9 for x in grid if at(x)[1] >= 0.97)
