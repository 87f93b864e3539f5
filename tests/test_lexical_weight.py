"""Choosing the lexical head's weight per model on dev (nlu.lexical_weight) and serving the stored one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callbot.settings import NluSettings
from knowledge_base.service import KnowledgeBase
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.lexical_weight import pick, tune
from nlu.matcher import Matcher, Thresholds


def test_the_weight_with_most_understood_wins_unless_it_gives_up_chatter() -> None:
    rows = {0.0: {"pooled_accuracy": 0.90, "chatter_rejected": 0.95},
            0.02: {"pooled_accuracy": 0.93, "chatter_rejected": 0.947},   # within one SE (n 1,000: 0.0069)
            0.05: {"pooled_accuracy": 0.96, "chatter_rejected": 0.90},    # understands more, lets chatter through
            0.08: {"pooled_accuracy": 0.93, "chatter_rejected": 0.96}}    # ties 0.02: the smaller weight wins
    choice = pick(rows, n_chatter=1000)
    assert choice.weight == 0.02 and choice.chatter_floor == pytest.approx(0.95 - 0.0069, abs=1e-4)
    assert [w for w in rows if choice.eligible(w)] == [0.0, 0.02, 0.08]
    # With far fewer chatter lines one SE is wide enough to let 0.05 in.
    assert pick(rows, n_chatter=15).weight == 0.05
    # Nothing beats the head off: it stays off.
    assert pick({0.0: {"pooled_accuracy": 0.9, "chatter_rejected": 0.95},
                 0.05: {"pooled_accuracy": 0.89, "chatter_rejected": 0.95}}, 1000).weight == 0.0


def test_the_shortest_reply_the_head_reads_is_chosen_by_the_same_rule() -> None:
    choice = pick({0.0: {"pooled_accuracy": 0.90, "chatter_rejected": 0.95},
                   0.05: {"pooled_accuracy": 0.93, "chatter_rejected": 0.95}}, n_chatter=1000)
    gates = {0: choice.rows[0.05],
             2: {"pooled_accuracy": 0.94, "chatter_rejected": 0.951},
             3: {"pooled_accuracy": 0.94, "chatter_rejected": 0.952},   # ties 2: the fewer characters win
             4: {"pooled_accuracy": 0.97, "chatter_rejected": 0.90}}    # understands more, lets chatter through
    gated = choice.with_gate(gates)
    assert (gated.weight, gated.min_chars) == (0.05, 2)
    assert gated.record()["min_chars"] == 2 and set(gated.record()["min_chars_grid"]) == {"0", "2", "3", "4"}
    assert choice.with_gate({0: choice.rows[0.05], 3: {"pooled_accuracy": 0.92, "chatter_rejected": 0.95}}).min_chars == 0


def test_thresholds_carry_their_weight_and_the_settings_serve_it(tmp_path: Path) -> None:
    model = tmp_path / "albert-sim-x"
    model.mkdir()
    assert NluSettings().heads(model)["lexical_head_weight"] == 0.0, "a model never tuned serves the head off"
    (model / "thresholds.json").write_text(json.dumps({"fallback": 0.6, "ambiguous_margin": 0.01, "temperature": 0.02,
                                                       "fallback_dialogue": 0.65, "lexical_head_weight": 0.05}))
    assert Thresholds.for_model(model).lexical_head_weight == 0.05
    assert NluSettings().heads(model)["lexical_head_weight"] == 0.05, "unset: the model's own weight"
    assert NluSettings(lexical_head_weight=0.0).heads(model)["lexical_head_weight"] == 0.0, "a number overrides it"
    assert NluSettings().heads(model)["lexical_min_chars"] == 0, "calibrated with the head on every reply"
    data = json.loads((model / "thresholds.json").read_text())
    (model / "thresholds.json").write_text(json.dumps({**data, "lexical_min_chars": 3}))
    assert Thresholds.for_model(model).lexical_min_chars == 3 and isinstance(Thresholds.for_model(model).lexical_min_chars, int)
    assert NluSettings().heads(model)["lexical_min_chars"] == 3
    assert NluSettings(lexical_min_chars=0).heads(model)["lexical_min_chars"] == 0


@pytest.mark.timeout(1500)
def test_tune_cross_fits_each_weight_and_calibrates_at_the_chosen_one(kb: KnowledgeBase, demo_file: Path,
                                                                      e5_model_dir: Path, tmp_path: Path) -> None:
    from nlu import heldout

    kb.import_files([demo_file])
    # A small slice of dev keeps this quick: a fixed twelfth of the caller replies and chatter.
    dev = [u for u in heldout.load("dev", ("caller_replies", "out_of_domain"))][::12]
    assert sum(u.intent is None for u in dev) >= 50 and sum(u.intent is not None for u in dev) >= 200
    from nlu.encoders.memo import MemoEncoder

    matcher = Matcher(kb.store, MemoEncoder(SentenceEncoder(e5_model_dir)), tmp_path / "vectors", refresh_interval_s=0.0)
    said: list[str] = []
    choice, thresholds, report = tune(matcher, dev, grid=(0.05,), progress=said.append, min_chars=(0, 3))
    assert set(choice.rows) == {0.0, 0.05} and choice.weight in choice.rows and choice.eligible(choice.weight)
    off, on = choice.rows[0.0], choice.rows[0.05]
    assert on != off, "the head moved the cross-fitted judgements"
    assert choice.weight == (0.05 if on["pooled_accuracy"] > off["pooled_accuracy"] and choice.eligible(0.05) else 0.0)
    assert thresholds.lexical_head_weight == choice.weight == matcher.lexical_head_weight
    assert report["lexical_head_weight"] == choice.weight and report["lexical_weight_choice"]["chosen"] == choice.weight
    assert any("cross-fitting" in s for s in said)
    # At a chosen weight the shortest reply the head reads is tried too; the thresholds are calibrated with it.
    assert thresholds.lexical_min_chars == choice.min_chars == matcher.lexical_min_chars
    if choice.weight > 0:
        assert set(choice.gate_rows or {}) == {0, 3} and report["lexical_weight_choice"]["min_chars"] == choice.min_chars
    else:
        assert choice.gate_rows is None and choice.min_chars == 0


def test_the_memo_encoder_encodes_each_sentence_once_and_returns_the_same_rows() -> None:
    import numpy as np

    from nlu.encoders.memo import MemoEncoder

    class Counting:
        name, dim, cache_id = "fake", 3, "fake-123"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
            self.seen += texts
            return np.array([[len(t), ord(t[0]), 1.0] for t in texts], dtype=np.float32) if texts else np.zeros((0, 3))

    inner = Counting()
    memo = MemoEncoder(inner, max_items=3)
    first = memo.encode(["好的", "不用了", "好的"])
    assert inner.seen == ["好的", "不用了"] and first.shape == (3, 3) and (first[0] == first[2]).all()
    again = memo.encode(["不用了", "在开会"])
    assert inner.seen == ["好的", "不用了", "在开会"], "only the new sentence is encoded"
    assert (again == inner.encode(["不用了", "在开会"])).all()
    full = memo.encode(["转人工", "好的"])  # over max_items: served, not remembered
    assert (full[1] == first[0]).all() and "转人工" not in memo._rows
    assert memo.cache_id == "fake-123" and memo.dim == 3 and memo.encode([]).shape[0] == 0


def test_a_recalibration_at_the_tuned_weight_keeps_the_record_of_the_choice(tmp_path: Path) -> None:
    from nlu.calibration import save_thresholds
    from nlu.lexical_weight import tuned_choice

    assert tuned_choice(tmp_path) is None, "never tuned"
    choice = {"grid": {}, "chatter_floor": 0.94, "chosen": 0.05}
    save_thresholds(tmp_path, Thresholds(lexical_head_weight=0.05), {"lexical_weight_choice": choice})
    save_thresholds(tmp_path, Thresholds(fallback=0.7, lexical_head_weight=0.05), {"model": "x"})  # model verify
    assert tuned_choice(tmp_path) == choice and Thresholds.for_model(tmp_path).fallback == 0.7
    save_thresholds(tmp_path, Thresholds(lexical_head_weight=0.0), {"model": "x"})  # calibrated at another weight
    assert tuned_choice(tmp_path) is None, "the record no longer describes what is served"


def test_sound_grams_match_homophones_and_fold_accents() -> None:
    from nlu.lexical_head import LexicalHead, char_and_sound_grams, fold_syllable

    assert [fold_syllable(s) for s in ("zhi", "chang", "shi", "neng", "qing", "kong", "nv")] == \
        ["zi", "can", "si", "len", "qin", "kong", "nv"]
    # A misheard reply shares one character with the wording and every sound gram.
    heard, meant = char_and_sound_grams("轻楚"), char_and_sound_grams("清楚了")
    assert {g for g in heard if not g.startswith("§")} & {g for g in meant if not g.startswith("§")} == {"楚"}
    assert {"§qin", "§cu", "§qin_cu"} <= set(heard) & set(meant)
    assert "§ok" not in char_and_sound_grams("OK好的") and "ok" in char_and_sound_grams("OK好的")
    texts = ["清楚了", "知道了", "收到", "满意", "不清楚", "不知道", "没收到", "不满意", "别打了", "不要再打了"]
    labels = ["affirm"] * 4 + ["deny"] * 4 + ["stop_calling"] * 2
    plain, sound = LexicalHead.fit(texts, labels), LexicalHead.fit(texts, labels, sound=True)
    names = ["affirm", "deny", "stop_calling"]
    for said, meant_intent in (("轻楚了", "affirm"), ("慢意", "affirm"), ("憋大了", "stop_calling")):
        p_sound = sound.log_proba(said, names)
        assert max(p_sound, key=p_sound.get) == meant_intent, (said, p_sound)
        assert p_sound[meant_intent] > plain.log_proba(said, names)[meant_intent], said


def test_sound_is_kept_only_when_it_understands_more_and_is_stored_with_the_thresholds(tmp_path: Path) -> None:
    choice = pick({0.0: {"pooled_accuracy": 0.90, "chatter_rejected": 0.95},
                   0.05: {"pooled_accuracy": 0.93, "chatter_rejected": 0.95}}, n_chatter=1000)
    assert choice.with_sound({"pooled_accuracy": 0.94, "chatter_rejected": 0.95}).sound
    assert not choice.with_sound({"pooled_accuracy": 0.93, "chatter_rejected": 0.95}).sound, "a tie keeps characters only"
    assert not choice.with_sound({"pooled_accuracy": 0.97, "chatter_rejected": 0.90}).sound, "gives up chatter"
    kept = choice.with_sound({"pooled_accuracy": 0.94, "chatter_rejected": 0.95})
    assert kept.with_gate({0: kept.rows[0.05], 3: {"pooled_accuracy": 0.95, "chatter_rejected": 0.95}}).sound, \
        "choosing the gate keeps the sound choice"
    assert kept.record()["sound"] is True and kept.record()["sound_row"]["pooled_accuracy"] == 0.94
    from nlu.calibration import save_thresholds

    assert not Thresholds.for_model(tmp_path).lexical_sound and not NluSettings().heads(tmp_path)["lexical_sound"]
    save_thresholds(tmp_path, Thresholds(lexical_head_weight=0.05, lexical_sound=True), {"model": "x"})
    assert Thresholds.for_model(tmp_path).lexical_sound is True and NluSettings().heads(tmp_path)["lexical_sound"] is True
    assert NluSettings(lexical_sound=False).heads(tmp_path)["lexical_sound"] is False, "a setting overrides it"


def test_the_service_warns_when_the_served_head_is_not_the_calibrated_one(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from nlu.service import _warn_if_calibrated_otherwise

    (tmp_path / "thresholds.json").write_text(json.dumps({"fallback": 0.5, "lexical_head_weight": 0.08,
                                                          "lexical_min_chars": 3, "lexical_sound": True}))
    th = Thresholds.for_model(tmp_path)
    served = {"intent_head_weight": 0.0, "lexical_head_weight": 0.08, "lexical_min_chars": 3, "lexical_sound": True}
    with caplog.at_level("WARNING"):
        _warn_if_calibrated_otherwise(tmp_path, th, served)
    assert not caplog.records, "served as calibrated: nothing to say"
    for key, value in (("lexical_min_chars", 0), ("lexical_sound", False), ("lexical_head_weight", 0.05)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            _warn_if_calibrated_otherwise(tmp_path, th, {**served, key: value})
        assert len(caplog.records) == 1 and key in caplog.records[0].__dict__["fields"]["settings"], key
