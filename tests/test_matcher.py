"""Scenario-scoped matching with the real e5 encoder over the demo knowledge base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.errors import NotFound
from knowledge_base.service import KnowledgeBase
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.matcher import IntentScore, Matcher, Thresholds
from nlu.text import EmptyText

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def e5(e5_model_dir: Path) -> SentenceEncoder:
    return SentenceEncoder(e5_model_dir)


@pytest.fixture(scope="module")
def shared_vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Vectors are keyed by text, so tests over fresh copies of the demo KB share one cache."""
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture
def matcher(kb: KnowledgeBase, demo_file: Path, e5: SentenceEncoder, shared_vectors: Path) -> Matcher:
    kb.import_files([demo_file])
    m = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0)
    m.refresh(force=True)
    return m


def test_same_words_mean_different_things_in_different_scenarios(matcher: Matcher) -> None:
    assert matcher.match("找他干嘛", "ipo_allotment_notice").top.intent == "wrong_person"
    assert matcher.match("找我干嘛", "ipo_allotment_notice").top.intent == "ask_purpose"
    assert matcher.match("不是我办的", "service_followup").top.intent == "dispute"  # the follow-up call's own meaning
    assert matcher.match("不是我办的", "ipo_allotment_notice").top.intent != "dispute"


def test_outbound_scenarios_also_answer_faqs(matcher: Matcher) -> None:
    result = matcher.match("我想开个户怎么弄", "ipo_allotment_notice").as_dict()
    assert result["matched"]["kind"] == "faq" and result["intent"]["name"] == "faq"
    assert result["matched"]["intent"].startswith("faq_open_account")
    # The FAQ scenario itself does not see the outbound scenarios' intents (it has its own chat intents).
    ranking = matcher.match("开车呢回头说", "faq", k=5).as_dict()["ranking"]
    assert ranking and all(r["scenario"] == "faq" for r in ranking)
    assert "busy" not in {r["intent"] for r in ranking}


def test_edits_are_incremental(matcher: Matcher, kb: KnowledgeBase) -> None:
    intent = next(i for i in kb.intents("faq") if i["name"] == "faq_reverse_repo_how_to")
    q = kb.add_question(intent["id"], "年底闲钱放哪里能赚点利息", author="t")
    assert matcher.refresh() is True
    assert matcher.last_refresh["encoded"] == 1, "only the new question is encoded"
    top = matcher.match("年底闲钱放哪里能赚点利息", "faq").top
    assert top.intent == "faq_reverse_repo_how_to" and top.score == pytest.approx(1.0, abs=1e-4)
    kb.delete_question(q["id"], actor="t")
    matcher.refresh()
    assert matcher.last_refresh["encoded"] == 0
    assert matcher.match("年底闲钱放哪里能赚点利息", "faq").top.question != "年底闲钱放哪里能赚点利息"


def test_corrupted_cache_is_rebuilt(matcher: Matcher, e5: SentenceEncoder, kb: KnowledgeBase, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import shutil

    assert matcher.cache.path.is_file()
    own = tmp_path / "vectors"
    own.mkdir()
    cache_file = own / matcher.cache.path.name
    shutil.copy(matcher.cache.path, cache_file)
    cache_file.write_bytes(b"not a numpy file at all")
    fresh = Matcher(kb.store, e5, own)
    with caplog.at_level("WARNING"):
        fresh.refresh(force=True)
    assert "unreadable" in caplog.text
    assert fresh.last_refresh["encoded"] == fresh.last_refresh["questions"] - _duplicates(fresh)
    assert fresh.match("转人工", "ipo_allotment_notice").top.intent == "request_human"
    again = Matcher(kb.store, e5, own)
    again.refresh(force=True)
    assert again.last_refresh["encoded"] == 0, "the rebuilt cache was saved"


def _duplicates(m: Matcher) -> int:
    texts = [e.text for s, scope in m._scopes.items() if s != "*" for e in scope.entries]
    return len(texts) - len(set(texts))


def test_bad_input(matcher: Matcher) -> None:
    with pytest.raises(EmptyText):
        matcher.match(" \t\u200b ", "faq")
    with pytest.raises(NotFound, match="Known scenarios"):
        matcher.match("嗯", "nope")
    long = matcher.match("开户" * 5000, "faq")
    assert long.extra["normalised_text"] and len(long.text) == 512
    matcher.thresholds = Thresholds(fallback=0.0, fallback_dialogue=None, ambiguous_margin=0.0)  # would take anything
    for wordless in ("😀😀😀", "？？？", "...", "👍🙏"):
        r = matcher.match(wordless, "ipo_allotment_notice")
        assert r.decision == "fallback" and r.extra.get("no_words"), (wordless, r.decision)
    assert matcher.match("好的👍", "ipo_allotment_notice").decision == "match", "a word beside an emoji is read"


def test_decision_rule(matcher: Matcher) -> None:
    matcher.thresholds = Thresholds(fallback=1.01, fallback_dialogue=None)
    r = matcher.match("转人工", "ipo_allotment_notice").as_dict()
    assert r["decision"] == "fallback" and r["intent"]["name"] == "nlu_fallback" and r["matched"] is None
    matcher.thresholds = Thresholds(fallback=0.0, ambiguous_margin=0.5)
    assert matcher.match("转人工", "ipo_allotment_notice").decision == "ambiguous"
    matcher.thresholds = Thresholds(fallback=0.0, ambiguous_margin=0.0)
    r = matcher.match("转人工", "ipo_allotment_notice").as_dict()
    assert r["decision"] == "match" and abs(sum(x["confidence"] for x in r["intent_ranking"]) - 1.0) < 0.05


def test_embed_command_keeps_lines_and_order(e5_model_dir: Path, tmp_path: Path, e5: SentenceEncoder) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("怎么开户\n\n转人工\n  \n", encoding="utf-8")
    out = tmp_path / "v.npy"
    result = subprocess.run([str(Path(sys.executable).parent / "callbot"), "nlu", "embed", "--model", "e5-small",
                             "-i", str(lines), "-o", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    vecs = np.load(out)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert np.allclose(vecs[2], e5.encode(["转人工"])[0], atol=1e-5)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("怎么开户".encode("gbk"))
    result = subprocess.run([str(Path(sys.executable).parent / "callbot"), "nlu", "embed", "-i", str(bad), "-o", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "not valid UTF-8" in result.stderr


def test_eval_reports_topk_and_confusions(matcher: Matcher, tmp_path: Path) -> None:
    from nlu.evaluation import evaluate_file

    path = tmp_path / "t.jsonl"
    rows = [{"text": "开车呢回头说", "intent": "busy", "scenario": "ipo_allotment_notice"},
            {"text": "我要投诉你们", "intent": "complain", "scenario": "service_followup"},
            {"text": "找他干嘛", "intent": "ask_purpose", "scenario": "ipo_allotment_notice"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    report = evaluate_file(matcher, path)
    assert report["n"] == 3 and report["top1"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["per_intent_recall"]["busy"] == 1.0 and report["per_intent_recall"]["ask_purpose"] == 0.0
    assert {"gold": "ask_purpose", "predicted": "wrong_person", "count": 1} in report["confusions"]


def test_approximate_index_above_the_configured_size(kb: KnowledgeBase, demo_file: Path, e5: SentenceEncoder, shared_vectors: Path) -> None:
    import faiss

    kb.import_files([demo_file])
    exact = Matcher(kb.store, e5, shared_vectors)
    approx = Matcher(kb.store, e5, shared_vectors, exact_index_limit=100)
    exact.refresh(force=True)
    approx.refresh(force=True)
    assert isinstance(approx._scopes["faq"].index, faiss.IndexHNSWFlat)
    assert isinstance(exact._scopes["faq"].index, faiss.IndexFlatIP)
    for text in ("我想开个户怎么弄", "逆回购怎么买", "密码忘了"):
        assert approx.match(text, "faq").top.intent == exact.match(text, "faq").top.intent


def test_a_new_database_cache_starts_from_a_sibling_and_new_weights_never_reuse_vectors(
        matcher: Matcher, e5: SentenceEncoder, kb: KnowledgeBase, tmp_path: Path) -> None:
    import os
    import shutil

    from nlu.vector_cache import VectorCache

    root = tmp_path / "vectors"
    (root / "db-a").mkdir(parents=True)
    shutil.copy(matcher.cache.path, root / "db-a" / matcher.cache.path.name)
    fresh = Matcher(kb.store, e5, root / "db-b")  # another database, same weights
    fresh.refresh(force=True)
    assert fresh.last_refresh["encoded"] == 0, "seeded from the sibling database's cache"
    assert (root / "db-b" / matcher.cache.path.name).is_file()
    # Retraining rewrites model.safetensors under the same name: the cache key changes with it.
    model_copy = tmp_path / "model"
    shutil.copytree(e5.path, model_copy)
    before = SentenceEncoder(model_copy).cache_id
    weights = model_copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert SentenceEncoder(model_copy).cache_id != before
    assert VectorCache(root / "db-c", SentenceEncoder(model_copy).cache_id, e5.dim).vectors == {}


def test_searches_run_on_the_configured_threads_in_any_thread(matcher: Matcher) -> None:
    """OpenMP thread counts are per calling thread; the web app searches on an executor thread, and the
    encoder's thread count must survive the search."""
    from concurrent.futures import ThreadPoolExecutor

    import faiss

    seen: list[int] = []

    class RecordingIndex:
        def __init__(self, index: faiss.Index):
            self.index = index

        def search(self, x: np.ndarray, n: int):  # type: ignore[no-untyped-def]
            seen.append(faiss.omp_get_max_threads())
            return self.index.search(x, n)

    scope = matcher._scopes["ipo_allotment_notice"]
    scope.index = RecordingIndex(scope.index)

    def match_then_count() -> int:
        faiss.omp_set_num_threads(2)  # what a fresh thread has on this 2-core machine
        matcher.match("找我干嘛", "ipo_allotment_notice")
        return faiss.omp_get_max_threads()

    with ThreadPoolExecutor(max_workers=1) as pool:
        after = pool.submit(match_then_count).result()
    assert seen == [matcher.search_threads] == [1], "the search ran on one OpenMP thread"
    assert after == 2, "the thread's own count (torch's, if the library is shared) is restored"


def test_a_top_match_on_the_out_of_scope_examples_is_a_fallback(matcher: Matcher) -> None:
    matcher.thresholds = Thresholds(fallback=0.0, ambiguous_margin=0.0, fallback_dialogue=0.0)  # no threshold would reject it
    for scenario in (None, "ipo_allotment_notice", "faq"):
        r = matcher.match("中午吃的啥呀", scenario).as_dict()  # one of the KB's chatter examples
        assert r["ranking"][0]["intent"] == "out_of_scope"
        assert r["decision"] == "fallback" and r["intent"]["name"] == "nlu_fallback" and r["matched"] is None
        assert r["out_of_scope"] is True
        assert "scenario_question" not in {x["name"] for x in r["intent_ranking"]}
    r = matcher.match("转人工", "ipo_allotment_notice").as_dict()
    assert r["decision"] == "match" and "out_of_scope" not in r


def test_out_of_scope_is_never_one_of_the_two_buttons(matcher: Matcher) -> None:
    matcher.thresholds = Thresholds(fallback=0.0, ambiguous_margin=2.0)  # every close call would be asked about
    r = matcher.match("开户要带啥", "faq")
    second = next(x for x in r.ranking[1:] if x.intent != "out_of_scope")
    assert r.decision == "ambiguous" and r.ranking[0].intent != "out_of_scope" and second.intent != "out_of_scope"
    top = r.ranking[0]
    chatter_close_behind = IntentScore(0, "out_of_scope", "dialogue", "faq", top.score - 0.001, "哈哈", "与证券业务无关的闲聊")
    assert matcher._decide(r.text, "faq", [top, chatter_close_behind]).decision == "match"


def test_intent_head_log_probabilities_cover_only_known_candidates() -> None:
    from nlu.intent_head import IntentHead

    rng = np.random.default_rng(0)
    centres = {"affirm": np.eye(8)[0], "deny": np.eye(8)[1], "busy": np.eye(8)[2]}
    labels = [name for name in centres for _ in range(20)]
    vectors = np.stack([centres[n] + 0.1 * rng.standard_normal(8) for n in labels]).astype(np.float32)
    head = IntentHead.fit(vectors, labels)
    lp = head.log_proba(centres["deny"], ["affirm", "deny", "never_seen"])
    assert set(lp) == {"affirm", "deny"}, "an intent the head was not fitted on is left to its cosine"
    assert np.isclose(np.exp(list(lp.values())).sum(), 1.0) and lp["deny"] > lp["affirm"]
    assert head.log_proba(centres["busy"], ["never_seen"]) == {}
    with pytest.raises(ValueError, match="two intents"):
        IntentHead.fit(vectors[:20], labels[:20])
    with pytest.raises(ValueError, match="labels"):
        IntentHead.fit(vectors, labels[:-1])


def test_intent_head_orders_candidates_but_leaves_their_cosines(kb: KnowledgeBase, demo_file: Path, e5: SentenceEncoder,
                                                                 shared_vectors: Path) -> None:
    kb.import_files([demo_file])
    plain = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0)
    plain.refresh(force=True)
    headed = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0, intent_head_weight=0.5)
    headed.refresh(force=True)
    assert headed.head_ready.wait(600) and headed._head is not None and headed._head[0] == headed.kb_version
    assert plain._head is None and not plain.head_ready.is_set(), "weight 0: no head is fitted"
    head = headed._head[1]
    assert {"affirm", "out_of_scope"} <= set(head.classes)
    reordered = 0
    for text, scenario in [("嗯嗯行吧就这样", None), ("我现在在开会不方便", "ipo_allotment_notice"), ("中签了钱什么时候扣", None),
                           ("你们这个手续费也太贵了吧", None), ("今天天气不错啊", None), ("找个人工跟我说", "risk_assessment_expiry")]:
        a, b = plain.match(text, scenario, k=5), headed.match(text, scenario, k=5)
        cos = {(r.intent, r.scenario): r.score for r in a.ranking}
        # The same candidates keep the same cosine (what the thresholds judge); only the order may change...
        assert all(cos.get((r.intent, r.scenario), r.score) == pytest.approx(r.score) for r in b.ranking)
        query = e5.encode([text])[0]
        lp = head.log_proba(query, [r.intent for r in b.ranking])
        keys = [r.score + 0.5 * lp[r.intent] for r in b.ranking]
        assert keys == sorted(keys, reverse=True), "...and it follows cosine + weight × log p"
        reordered += [r.intent for r in a.ranking] != [r.intent for r in b.ranking]
    assert reordered >= 1, "at weight 0.5 the head changes some order"
    # A KB edit fits a new head for the new version; until then the old one is not used.
    intent = next(i for i in kb.intents("faq") if i["name"] == "faq_reverse_repo_how_to")
    kb.add_question(intent["id"], "闲钱放哪能多赚点利息呢", author="t")
    assert headed.refresh() is True
    assert headed.head_ready.wait(600) and headed._head[0] == headed.kb_version


def test_lexical_head_reads_the_characters_a_short_reply_turns_on() -> None:
    from nlu.lexical_head import LexicalHead

    texts = ["好的没问题", "可以的", "行，知道了", "嗯对", "不用了", "不行", "不需要", "没兴趣", "我在开会", "正忙着呢", "在开车"]
    labels = ["affirm"] * 4 + ["deny"] * 4 + ["busy"] * 3
    head = LexicalHead.fit(texts, labels)
    lp = head.log_proba("不用了谢谢", ["affirm", "deny", "busy"])
    assert np.isclose(np.exp(list(lp.values())).sum(), 1.0) and max(lp, key=lp.get) == "deny"
    assert max(head.log_proba("开会呢", ["affirm", "deny", "busy"]).items(), key=lambda kv: kv[1])[0] == "busy"
    assert head.log_proba("不用了", ["never_seen"]) == {}
    with pytest.raises(ValueError, match="two intents"):
        LexicalHead.fit(texts[:4], labels[:4])


def test_lexical_head_moves_the_judged_score_and_is_cached_by_the_kb_texts(kb: KnowledgeBase, demo_file: Path,
                                                                            e5: SentenceEncoder, shared_vectors: Path) -> None:
    from nlu.lexical_head import load_or_fit

    kb.import_files([demo_file])
    plain = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0)
    plain.refresh(force=True)
    lexical = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0, lexical_head_weight=0.05)
    lexical.refresh(force=True)
    assert lexical._lexical is not None, "the first head is there before the matcher serves"
    folder = shared_vectors / "lexical"
    cached = list(folder.glob("lexical-head-*.pkl"))
    assert len(cached) == 1
    for text, scenario in [("嗯嗯行吧就这样", None), ("不用了不用了", "ipo_allotment_notice"), ("今天天气不错啊", None)]:
        a, b = plain.match(text, scenario, k=5), lexical.match(text, scenario, k=5)
        bonus = lexical.lexical_bonus(normalise_for_test(text), [r.intent for r in b.ranking])
        first = b.ranking[0]
        for r in b.ranking:  # score = cosine + weight × log p; p normalised over every candidate, so compare differences
            assert r.cosine is not None and r.score <= r.cosine + 1e-6, "a log-probability is never positive"
            assert (r.score - r.cosine) - (first.score - first.cosine) == pytest.approx(bonus[r.intent] - bonus[first.intent], abs=1e-5)
        assert [r.score for r in b.ranking] == sorted((r.score for r in b.ranking), reverse=True)
        assert "cosine" in b.as_dict()["ranking"][0] and "cosine" not in a.as_dict()["ranking"][0]
    # A reply that is word for word a KB question keeps that question's intent however heavy the head: 好 is an
    # affirm wording, and the head alone reads 好 as greet (你好, 您好).
    heavy = Matcher(kb.store, e5, shared_vectors, refresh_interval_s=0.0, lexical_head_weight=1.0)
    heavy.refresh(force=True)
    texts, labels = heavy.head_training_set()
    assert "好" in [t for t, label in zip(texts, labels, strict=True) if label == "affirm"]
    assert heavy.lexical_bonus("好", ["affirm", "greet"])["greet"] > heavy.lexical_bonus("好", ["affirm", "greet"])["affirm"]
    assert heavy.match("好", "ipo_allotment_notice").ranking[0].intent == "affirm"
    assert heavy.match("好", None).ranking[0].cosine is None, "no head on an exact wording"
    # With a shortest reply for the head, shorter replies are judged on their cosine alone; punctuation is not counted.
    heavy.lexical_min_chars = 3
    assert heavy.lexical_reads("不用了") and not heavy.lexical_reads("会的！") and not heavy.lexical_reads("嗯")
    assert heavy.match("会的！", "ipo_allotment_notice").ranking[0].cosine is None
    assert heavy.match("会的会的我记着呢", "ipo_allotment_notice").ranking[0].cosine is not None
    # A restart on the same KB loads the head instead of fitting it; an edit fits a new one and replaces the file.
    texts, labels = lexical.head_training_set()
    assert load_or_fit(folder, texts, labels).classes == lexical._lexical[1].classes
    cached[0].write_bytes(b"not a pickle")  # a damaged cache file is fitted again, not a crash
    assert load_or_fit(folder, texts, labels).classes == lexical._lexical[1].classes
    intent = next(i for i in kb.intents("faq") if i["name"] == "faq_reverse_repo_how_to")
    kb.add_question(intent["id"], "闲钱放哪能多赚点利息呢", author="t")
    assert lexical.refresh() is True
    assert lexical.head_ready.wait(600) and lexical._lexical[0] == lexical.kb_version
    assert len(list(folder.glob("lexical-head-*.pkl"))) == 1, "replaced, not accumulated"


def normalise_for_test(text: str) -> str:
    from nlu.text import normalise

    return normalise(text)
