"""Measuring a built ALBERT-sim against e5-small, so `albert-sim`/`auto` resolve to a model that earned it.

Quality = knowledge-base leave-one-out top-1 on questions no model trains on (dialogue intents' questions
and the held-out FAQ split, nlu.data.kb_split; always available) and, when the research corpora are
present, Spearman×100 on our LCQMC/BQ dev pairs. ``better_than_e5`` requires all (where measured) to
be at least e5's, and a model that was pair-trained on the held-out questions is never eligible: its KB
figure is inflated. The result is written to ``verified.json`` beside the model, and the model's
match/ambiguous/fallback thresholds, calibrated on the knowledge base, to ``thresholds.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.db import Store
from nlu.data.corpora import corpus_file, read_pairs, sample
from nlu.data.kb_split import SPLIT_ID, is_clean_query, saw_heldout
from nlu.model_cache import quality_score

KB_QUERIES = 2000  # all clean questions of the demo KB (about 1,100); a cap for big knowledge bases


def _measure(path: Path, store: Store, cache_dir: Path, dev: dict[str, list], calibrate_thresholds: bool = False,
             quantize: str = "none") -> dict[str, Any]:
    """Quality figures; with ``calibrate_thresholds`` also the model's decision thresholds, saved beside
    it (an ALBERT-sim's scores spread differently from e5's: e5's thresholds would reject everything)."""
    from nlu.calibration import _leave_one_out, calibrate, save_thresholds
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher
    from nlu.similarity_eval import encoder_scores, evaluate_pairs

    enc = SentenceEncoder(path, quantize=quantize)
    matcher = Matcher(store, enc, cache_dir)
    matcher.refresh(force=True)
    loo = _leave_one_out(matcher, KB_QUERIES, only=lambda e: is_clean_query(e.text))
    gold = np.array([g for _, _, g in loo])
    out: dict[str, Any] = {"kb_heldout_top1": round(float((gold == 0).mean()), 4), "kb_queries": len(gold)}
    for label, pairs in dev.items():
        out[f"{label}_spearman"] = evaluate_pairs(encoder_scores(enc, pairs), pairs)["spearman"]
    if calibrate_thresholds:
        # On the held-out questions only: a pair-trained model scores its training questions higher than
        # anything a caller will say, and thresholds fitted to those would be too strict for real turns.
        thresholds, report = calibrate(matcher, only=lambda e: is_clean_query(e.text))
        save_thresholds(path, thresholds, report)
    return out


def dev_sets() -> dict[str, list]:
    sets = {}
    for label, name in (("lcqmc", "lcqmc_train.tsv"), ("bq", "bq_train.tsv")):
        try:
            path = corpus_file(name)
        except Exception:
            continue
        if path.is_file():
            sets[label] = sample(read_pairs(path, "dev"), 1000, seed=11)
    return sets


def verify_albert(model_dir: Path, e5_dir: Path, store: Store, cache_dir: Path, quantize: str = "none") -> dict[str, Any]:
    """Measure ``model_dir`` against e5-small (float32, the default) and write ``verified.json``; with
    ``quantize="int8"`` measure the int8 variant instead and write ``verified.int8.json``, which informs
    the `nlu.quantize` setting but never makes a model the default (thresholds stay the float32 ones)."""
    dev = dev_sets()
    e5_file = e5_dir / "quality.json"
    e5_q = json.loads(e5_file.read_text()) if e5_file.is_file() else None
    # e5's figures are cached per knowledge-base version and measure: any edit can move them.
    stamp = {"kb_version": store.kb_version(), "kb_split": SPLIT_ID}
    if e5_q is None or {k: e5_q.get(k) for k in stamp} != stamp \
            or set(e5_q) - set(stamp) != {"kb_heldout_top1", "kb_queries", *(f"{k}_spearman" for k in dev)}:
        e5_q = {**_measure(e5_dir, store, cache_dir, dev), **stamp}
        e5_file.write_text(json.dumps(e5_q))
    e5_q = {k: v for k, v in e5_q.items() if k not in ("kb_queries", *stamp)}
    mine = _measure(model_dir, store, cache_dir, dev, calibrate_thresholds=quantize == "none", quantize=quantize)
    queries = mine.pop("kb_queries")
    leaked = saw_heldout(json.loads((model_dir / "callbot_encoder.json").read_text()))
    better = not leaked and all(mine[k] >= e5_q[k] for k in mine)
    report = {"quality": mine, "e5_quality": e5_q, "better_than_e5": better, "kb_split": SPLIT_ID,
              "kb_heldout_seen": leaked, "kb_queries": queries, "score": quality_score(mine),
              "kb_intents": store.intent_keys()}
    if quantize != "none":
        report["quantize"] = quantize
    (model_dir / ("verified.json" if quantize == "none" else f"verified.{quantize}.json")).write_text(json.dumps(report, indent=2))
    return report
