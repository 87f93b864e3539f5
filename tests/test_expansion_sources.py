"""Extension-question sources (spoken rewrites, thesaurus swaps) and the one filter and ranking they share,
with the real e5 encoder over a small knowledge base; the CLI and the API endpoint end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from knowledge_base.errors import CallbotError
from knowledge_base.service import KnowledgeBase
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.expansion import MIXED_SOURCES, Candidate, canonical, expand_with, filter_and_rank
from nlu.matcher import Matcher
from nlu.rewrites import load_thesaurus, spoken_rewrites, thesaurus_path, thesaurus_swaps
from nlu.text import EmptyText
from tests.conftest import link_fresh_e5

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"beam", "sample", "rewrite", "thesaurus"}

TINY_KB = {"schema_version": 1, "scenarios": [{
    "code": "faq", "name": "常见问题", "kind": "inbound", "include_faq": False, "intents": [
        {"name": "faq_open_account", "kind": "faq", "standard_question": "怎么开立证券账户？", "answer": "在App上点开户。",
         "extension_questions": ["我想开个户怎么弄", "咋开户啊", "手机上能开股票账户吗", "开户要多久能弄好"]},
        {"name": "faq_close_account", "kind": "faq", "standard_question": "怎么注销证券账户？", "answer": "请到营业部办理销户。",
         "extension_questions": ["我要销户", "不想用了怎么销户", "账户怎么注销"]},
        {"name": "faq_reset_trade_password", "kind": "faq", "standard_question": "交易密码忘了怎么重置？", "answer": "在App上重置。",
         "extension_questions": ["交易密码忘记了", "怎么找回交易密码", "密码输错锁了怎么办"]},
        {"name": "faq_commission_reduce", "kind": "faq", "standard_question": "佣金能不能降低？", "answer": "请联系客户经理。",
         "extension_questions": ["佣金太高了能便宜点吗", "手续费能打折吗", "怎么申请降佣"]},
    ]}]}


@pytest.fixture(scope="module")
def tiny_kb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-kb") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_KB, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def e5(e5_model_dir: Path) -> SentenceEncoder:
    return SentenceEncoder(e5_model_dir)


@pytest.fixture
def matcher(kb: KnowledgeBase, tiny_kb_file: Path, e5: SentenceEncoder, tmp_path: Path) -> Matcher:
    kb.import_files([tiny_kb_file])
    m = Matcher(kb.store, e5, tmp_path / "vectors", refresh_interval_s=0.0)
    m.refresh(force=True)
    return m


# -- the sources ---------------------------------------------------------------------------------------

def test_spoken_rewrites_differ_from_the_source_and_keep_its_key_nouns() -> None:
    source = "怎么开通科创板交易权限？"
    rewrites = spoken_rewrites(source)
    texts = [r.text for r in rewrites]
    assert len(texts) >= 10 and len(set(texts)) == len(texts)
    assert all(r.source == "rewrite" for r in rewrites)
    assert all(t != source and "科创板" in t and "?" not in t for t in texts), texts
    assert "我要开通科创板交易权限" in texts, "a request is a statement, not a question"
    # One substitution, two, and a customer framing.
    assert {"咋开通科创板交易权限？", "怎么开科创板交易权限？", "我想开通科创板交易权限，怎么弄？"} <= set(texts)
    assert "咋开科创板交易权限？" in texts
    # Normalised input (ASCII punctuation, as nlu.text.normalise leaves it) comes back full-width.
    assert spoken_rewrites("佣金能不能降低?")[0].text.endswith("？")


def test_rewrites_frame_questions_only_and_need_chinese() -> None:
    assert not any(t.text.startswith("请问") for t in spoken_rewrites("再见"))
    assert any(t.text == "请问佣金能不能降低？" for t in spoken_rewrites("佣金能不能降低？"))
    assert spoken_rewrites("how do I open an account?") == []
    assert thesaurus_swaps("how do I open an account?") == []


def test_thesaurus_swaps_exactly_one_word_for_a_listed_synonym() -> None:
    import jieba

    source = "卖出股票后资金什么时候能取出？"
    words = jieba.lcut(source)
    thesaurus = load_thesaurus()
    swaps = thesaurus_swaps(source)
    assert swaps and all(s.source == "thesaurus" for s in swaps)
    for s in swaps:  # the source's segmentation with one word of two or more characters replaced by a synonym
        assert any(len(w) >= 2 and "".join([*words[:i], syn, *words[i + 1:]]) == s.text
                   for i, w in enumerate(words) for syn in thesaurus.get(w, ())), s.text
    assert all("什么时候" in s.text for s in swaps), "stop words are never swapped"
    only = thesaurus_swaps(source, attested=frozenset({"卖掉"}))
    assert [s.text for s in only] == ["卖掉股票后资金什么时候能取出？"]


def test_thesaurus_file_is_found_and_a_missing_one_names_the_fix(tmp_path: Path) -> None:
    assert thesaurus_path().is_file() and len(load_thesaurus()) > 10_000
    with pytest.raises(CallbotError, match=r"pip install cnsyn==1\.2\.0"):
        load_thesaurus(tmp_path / "sim_words.txt")


# -- one filter and ranking ----------------------------------------------------------------------------

def test_filter_drops_duplicates_near_duplicates_and_other_intents(matcher: Matcher, e5: SentenceEncoder) -> None:
    from nlu.rewrites import Proposal

    existing = [e.text for e in matcher._scopes["faq"].entries]
    source = "怎么开立证券账户？"
    other = "我想把证券账户注销掉"
    candidates = [Proposal("怎么开立证券账户", "rewrite"),  # the source, punctuation aside
                  Proposal("咋开户啊？", "rewrite"),  # a KB question, punctuation aside
                  Proposal("怎么开立证券账户呢？", "rewrite"),  # a near-duplicate (e5 ≥ 0.98)
                  Proposal("怎么开证券账户？", "rewrite"), Proposal("怎么开证券账户？", "thesaurus"),
                  Proposal("怎么开个股票账户？", "rewrite"), Proposal(other, "thesaurus")]

    def nearest(text: str) -> str | None:
        result = matcher.match(text, "faq")
        return result.top.intent if result.top and result.decision != "fallback" else None

    assert nearest(other) == "faq_close_account"
    unfiltered = filter_and_rank(source, candidates, e5, existing, n=10)
    assert other in {c.text for c in unfiltered}, "kept without the matcher: the intent check is what drops it"
    kept = filter_and_rank(source, candidates, e5, existing, nearest, "faq_open_account", n=10)
    texts = [c.text for c in kept]
    assert "怎么开证券账户？" in texts and "怎么开个股票账户？" in texts
    assert not {"怎么开立证券账户", "咋开户啊？", "怎么开立证券账户呢？", other} & set(texts)
    assert len(texts) == len({canonical(t) for t in texts}), "the same wording from two sources is one candidate"
    assert all(isinstance(c, Candidate) and c.source in SOURCES and c.nearest_intent == "faq_open_account" for c in kept)
    assert [c.source for c in filter_and_rank(source, ["开立股票账户的流程是什么？"], e5, [])] == ["beam"], "plain texts are beam output"
    scores = [c.score for c in kept]
    assert scores == sorted(scores, reverse=True) and all(0 < c.score < c.similarity < 1 for c in kept)


def test_ranking_penalises_candidates_close_to_one_already_kept(matcher: Matcher, e5: SentenceEncoder) -> None:
    source = "交易密码忘了怎么重置？"
    pool = spoken_rewrites(source)
    plain = filter_and_rank(source, pool, e5, [], n=5, diversity=0.0)
    diverse = filter_and_rank(source, pool, e5, [], n=5, diversity=0.5)
    vecs = {c.text: v for c, v in zip(plain, e5.encode([c.text for c in plain]), strict=True)}
    dvecs = {c.text: v for c, v in zip(diverse, e5.encode([c.text for c in diverse]), strict=True)}

    def closest_pair(vs: dict) -> float:  # type: ignore[type-arg]
        items = list(vs.values())
        return max(float(a @ b) for i, a in enumerate(items) for b in items[i + 1:])

    assert [c.similarity for c in plain] == sorted((c.similarity for c in plain), reverse=True), "no diversity: by similarity"
    assert closest_pair(dvecs) < closest_pair(vecs)
    assert sum(c.similarity for c in diverse) < sum(c.similarity for c in plain), "diversity costs some similarity"


def test_expand_mixed_without_a_generator_notes_it_and_every_candidate_has_source_and_score(matcher: Matcher) -> None:
    result = expand_with(matcher, "佣金能不能降低？", 10, "mixed", "faq")
    assert result.candidates and result.total >= len(result.candidates)
    assert set(result.generated) == set(MIXED_SOURCES) - {"beam"}
    assert any(n.startswith("beam skipped") for n in result.notes)
    for c in result.candidates:
        assert c.source in {"rewrite", "thesaurus"} and isinstance(c.score, float) and c.nearest_intent == "faq_commission_reduce"
    assert "佣金能不能降低？" not in {c.text for c in result.candidates}


def test_bad_sources_get_a_clear_error_or_an_empty_result(matcher: Matcher) -> None:
    with pytest.raises(EmptyText):
        expand_with(matcher, "  \u200b ", 5, "mixed", "faq")
    with pytest.raises(CallbotError, match="at most 200 characters"):
        expand_with(matcher, "开户" * 150, 5, "mixed", "faq")
    with pytest.raises(CallbotError, match="method must be beam or sample"):
        expand_with(matcher, "怎么开户", 5, "greedy", "faq")
    with pytest.raises(CallbotError, match="n must be between 1 and 100"):
        expand_with(matcher, "怎么开户", 0, "mixed", "faq")
    with pytest.raises(CallbotError, match="no generator"):
        expand_with(matcher, "怎么开户", 5, "beam", "faq")
    english = expand_with(matcher, "how do I open an account", 5, "mixed", "faq")
    assert english.candidates == [] and any("no Chinese" in n for n in english.notes)


def test_measure_counts_useful_candidates_per_source(matcher: Matcher, kb: KnowledgeBase, e5: SentenceEncoder) -> None:
    from nlu.generation_quality import faq_source_intents, measure

    sources, existing = faq_source_intents(kb, 2)
    assert len(sources) == 2 and all(q in existing for q, _ in sources)
    existing_vecs = e5.encode(sorted(existing))
    r = measure(sources, "rewrite", matcher, matcher, None, 0.9, existing, existing_vecs, top=5)
    assert r["slots"] == 10 and 0 < r["candidates"] <= 10 and set(r["by_source"]) == {"rewrite"}
    assert 0 <= r["useful"] <= r["same_intent"] <= r["candidates"]
    assert r["useful_share"] == round(r["useful"] / 10, 4) and r["useful_of_candidates"] >= r["useful_share"]
    for e in r["examples"]:
        assert e["candidate"] not in existing and e["source"] == "rewrite" and e["source_question"] in dict(sources)


# -- end to end ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_home(tiny_kb_file: Path, e5_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A home with the small KB and a model cache holding e5-small only (no generator)."""
    tmp = tmp_path_factory.mktemp("expand-home")
    (tmp / "cache" / "models").mkdir(parents=True)
    link_fresh_e5(tmp / "cache" / "models", e5_model_dir)
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(tmp / "cache"), "CALLBOT_HOME": str(tmp / "home"), "CALLBOT_NLU__MODEL": "e5-small",
           "CALLBOT_NLU__USE_SCENARIO_MODELS": "false"}
    callbot = str(Path(sys.executable).parent / "callbot")
    done = subprocess.run([callbot, "kb", "import", str(tiny_kb_file)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env


def test_cli_shows_source_and_score(tiny_home: dict[str, str]) -> None:
    callbot = str(Path(sys.executable).parent / "callbot")
    env = {**tiny_home, "COLUMNS": "200"}
    done = subprocess.run([callbot, "nlu", "expand", "交易密码忘了怎么重置？", "-n", "5", "-s", "faq"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "source" in done.stdout and "score" in done.stdout and "rewrite" in done.stdout
    assert "generated (mixed: rewrite" in done.stdout and "beam skipped" in done.stdout
    bad = subprocess.run([callbot, "nlu", "expand", "怎么开户", "--method", "greedy"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "method must be" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def tiny_webapp(tiny_home: dict[str, str]) -> Iterator[str]:
    from tests.conftest import free_port, running_webapp

    with running_webapp({**tiny_home, "CALLBOT_PORTS__WEB": str(free_port())}) as url:
        yield url


def test_expand_endpoint_returns_source_and_score_and_stores_pending(tiny_webapp: str) -> None:
    from tests.conftest import http

    _, intents = http("GET", tiny_webapp + "/kb/scenarios/faq/intents")
    target = next(i for i in intents if i["name"] == "faq_reset_trade_password")
    status, result = http("POST", tiny_webapp + f"/kb/intents/{target['id']}/expand", {"n": 4}, timeout=180)
    assert status == 201, result
    assert result["method"] == "mixed" and any(n.startswith("beam skipped") for n in result["notes"])
    assert result["candidates"] and len(result["stored"]) == len(result["candidates"]) <= 4
    for c in result["candidates"]:
        assert c["source"] in {"rewrite", "thesaurus"} and isinstance(c["score"], float) and c["question_id"]
    _, after = http("GET", tiny_webapp + f"/kb/intents/{target['id']}")
    pending = {q["text"]: q for q in after["extension_questions"] if q["status"] == "pending"}
    assert {c["text"] for c in result["candidates"]} == set(pending)
    assert all(q["source"] == "generated" for q in pending.values())
    # Again: what staff have in the queue already is not proposed (nor stored) twice.
    status, again = http("POST", tiny_webapp + f"/kb/intents/{target['id']}/expand", {"n": 4, "method": "rewrite"}, timeout=180)
    assert status == 201, again
    assert not {c["text"] for c in again["candidates"]} & set(pending)
    assert all(c["source"] == "rewrite" for c in again["candidates"])
    status, bad = http("POST", tiny_webapp + f"/kb/intents/{target['id']}/expand", {"method": "greedy"})
    assert status == 400 and "method must be" in bad["error"]


def test_truncations_of_the_source_are_neither_proposed_nor_counted_useful() -> None:
    from nlu.expansion import is_truncation

    source = "怎么开通科创板交易权限？"
    assert is_truncation(source, "怎么开通科？") and is_truncation(source, "怎么开通创权限？")
    assert not is_truncation(source, "科创板怎么开通"), "a reordering is a wording, not a fragment"
    assert not is_truncation(source, "如何开通科创板交易权限") and not is_truncation(source, source)
    assert not is_truncation(source, "科创板权限咋开啊")
    assert not is_truncation("怎么开立证券账户？", "怎么开证券账户？"), "dropping one word of eight is a wording"


# -- near-copies by form, generated-text plausibility, sibling rewrites --------------------------------------------


class _IntentEncoder:
    """An encoder that, like a pair-trained ALBERT-sim, puts every wording of one intent in one place: its
    cosines cannot tell a near-copy from a new wording, so only a FormCheck can."""

    name = "intent-encoder"
    dim = 2

    def encode(self, texts):  # type: ignore[no-untyped-def]
        import numpy as np

        rows = [[1.0, 0.0] if "开" in t else [0.0, 1.0] for t in texts]
        jitter = [[0.0, 0.001 * (len(t) % 7)] for t in texts]  # below 0.98 apart, as a new wording would be
        out = np.array(rows) + np.array(jitter)
        return out / np.linalg.norm(out, axis=1, keepdims=True) * 0.97 ** 0.5 + 0.0


def test_near_copies_are_judged_by_the_form_encoder_when_the_serving_one_clusters_intents(e5: SentenceEncoder) -> None:
    from nlu.expansion import FormCheck

    source = "怎么开立证券账户？"
    candidates = ["请问怎么开立证券账户？", "怎么开立证券账户呢？", "开股票户要带什么证件"]
    clustered = _IntentEncoder()
    without = [c.text for c in filter_and_rank(source, candidates, clustered, [], n=10, diversity=0.0)]
    assert "请问怎么开立证券账户？" in without, "the clustering encoder alone calls a reframing new"
    with_form = [c.text for c in filter_and_rank(source, candidates, clustered, [], n=10, diversity=0.0,
                                                 form=FormCheck(e5), form_references=["我想开个户怎么弄"])]
    assert with_form == ["开股票户要带什么证件"], with_form


def test_generated_candidates_that_loop_or_invent_words_are_dropped() -> None:
    from nlu.expansion import plausible

    attested = frozenset({"佣金", "费用", "股票", "买卖", "逆回购", "操作", "哪些", "还有"})
    assert plausible("买卖股票除了佣金还有哪些费用？", "股票买卖还有哪些费用？", attested)
    assert not plausible("你是哪位", "你是哪位哪你哪", attested), "a loop repeats a character"
    assert not plausible("我要投诉", "我要投诉我投诉，我投诉", attested)
    assert not plausible("我要投诉", "我不投诉", attested), "a negation the source lacks reverses it"
    assert plausible("你们不要再打了", "不要再打了", attested), "the source's own negation may stay"
    assert not plausible("国债逆回购怎么操作？", "逆回债怎么操作？", attested), "逆回债 is no word of this KB"


def test_spoken_rewrites_also_start_from_the_intents_other_questions(matcher: Matcher) -> None:
    result = expand_with(matcher, "佣金能不能降低？", 20, "rewrite", "faq")
    from_siblings = [c.text for c in result.candidates if "便宜" in c.text]  # only 佣金太高了能便宜点吗 says it
    assert from_siblings, [c.text for c in result.candidates]
    assert all(canonical(c.text) != canonical("佣金太高了能便宜点吗") for c in result.candidates)
    alone = expand_with(matcher, "佣金可以降低吗？", 20, "rewrite", "faq")  # not a KB question, no intent: itself alone
    assert not any("便宜" in c.text for c in alone.candidates)


def test_zhi_de_shi_only_where_the_question_ends() -> None:
    texts = [p.text for p in spoken_rewrites("我是什么类型的投资者？")]
    assert not any("我指的是" in t for t in texts), texts
    assert any(t.startswith("融券指的是什么") for t in (p.text for p in spoken_rewrites("融券是什么？"))), \
        [p.text for p in spoken_rewrites("融券是什么？")]
