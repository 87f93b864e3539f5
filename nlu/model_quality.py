"""Measuring a built ALBERT-sim against e5-small, so `albert-sim`/`auto` resolve to a model that earned it.

Quality = knowledge-base leave-one-out top-1 on questions no model trains on (the held-out fifth,
nlu.data.kb_split), the decision accuracy on utterances written apart from the knowledge base
(nlu.heldout's test split: callers' replies with and without a call, call-fact questions, FAQ
questions) and, when the research corpora are present, Spearman×100 on our LCQMC/BQ dev pairs.
``better_than_e5`` requires each to be at least e5's (out-of-domain chatter rejected within 5 points of
e5's share), and a model that was pair-trained on the held-out questions is never eligible: its KB
figure is inflated. The result is written to ``verified.json`` beside the model, and the model's
match/ambiguous/fallback thresholds, calibrated on the knowledge base, to ``thresholds.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.db import Store
from nlu.data.corpora import corpus_file, read_pairs, sample
from nlu.data.kb_split import SPLIT_ID, is_clean_query, saw_heldout
from nlu.model_cache import quality_score

KB_QUERIES = 2000  # all clean questions of the demo KB (about 1,100); a cap for big knowledge bases


def _measure(path: Path, store: Store, cache_dir: Path, dev: dict[str, list], quantize: str = "none",
             progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(quality figures, held-out report). In float32 the model's decision thresholds are calibrated first
    and saved beside it (every model's scores spread differently: e5's thresholds would reject nearly
    everything an ALBERT-sim says); the int8 variant is measured with the float32 thresholds it is served with."""
    from nlu import heldout
    from nlu.calibration import _leave_one_out, calibrate, save_thresholds
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher, Thresholds
    from nlu.similarity_eval import encoder_scores, evaluate_pairs

    say = progress or (lambda _msg: None)
    enc = SentenceEncoder(path, quantize=quantize)
    matcher = Matcher(store, enc, cache_dir)
    matcher.refresh(force=True)
    say(f"{path.name}: knowledge-base held-out fifth")
    loo = _leave_one_out(matcher, KB_QUERIES, only=lambda e: is_clean_query(e.text))
    gold = np.array([g for _, _, g in loo])
    out: dict[str, Any] = {"kb_heldout_top1": round(float((gold == 0).mean()), 4), "kb_queries": len(gold)}
    for label, pairs in dev.items():
        say(f"{path.name}: {label} dev pairs")
        out[f"{label}_spearman"] = evaluate_pairs(encoder_scores(enc, pairs), pairs)["spearman"]
    if quantize == "none":
        # On the KB's held-out questions and the held-out dev utterances only: a pair-trained model scores its
        # training questions higher than anything a caller will say, and the KB's own style flatters any model.
        say(f"{path.name}: calibrating thresholds")
        thresholds, report = calibrate(matcher, only=lambda e: is_clean_query(e.text), dev=heldout.load("dev"))
        save_thresholds(path, thresholds, report)
        matcher.thresholds = thresholds
    else:
        matcher.thresholds = Thresholds.for_model(path)
    say(f"{path.name}: held-out test utterances")
    report = heldout.measure(matcher, "test")
    out.update({k: report[k] for k in heldout.GATED + heldout.OOD_KEYS if k in report})
    return out, report


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


def eval_sets_digest() -> str:
    from nlu.heldout import EVAL_DIR

    h = hashlib.sha256()
    for path in sorted(EVAL_DIR.glob("*.jsonl")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def verify_albert(model_dir: Path, e5_dir: Path, store: Store, cache_dir: Path, quantize: str = "none",
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``model_dir`` against e5-small (float32, the default) and write ``verified.json``; with
    ``quantize="int8"`` measure the int8 variant instead and write ``verified.int8.json``, which informs
    the `nlu.quantize` setting but never makes a model the default (thresholds stay the float32 ones)."""
    from nlu import heldout

    dev = dev_sets()
    e5_file = e5_dir / "quality.json"
    e5_saved = json.loads(e5_file.read_text()) if e5_file.is_file() else None
    # e5's figures are cached per knowledge-base version, measure and held-out sets: any edit can move them.
    stamp = {"kb_version": store.kb_version(), "kb_split": SPLIT_ID, "eval_sets": eval_sets_digest(),
             "corpora": sorted(dev)}
    if e5_saved is None or {k: e5_saved.get(k) for k in stamp} != stamp:
        e5_q, e5_heldout = _measure(e5_dir, store, cache_dir, dev, progress=progress)
        e5_saved = {"quality": e5_q, "heldout": e5_heldout, **stamp}
        e5_file.write_text(json.dumps(e5_saved, ensure_ascii=False))
    e5_q = {k: v for k, v in e5_saved["quality"].items() if k != "kb_queries"}
    mine, mine_heldout = _measure(model_dir, store, cache_dir, dev, quantize=quantize, progress=progress)
    queries = mine.pop("kb_queries")
    leaked = saw_heldout(json.loads((model_dir / "callbot_encoder.json").read_text()))
    better = not leaked and all(
        mine.get(k, -1.0) >= e5_q[k] - (heldout.OOD_TOLERANCE if k in heldout.OOD_KEYS else 0.0) for k in e5_q)
    report = {"quality": mine, "e5_quality": e5_q, "better_than_e5": better, "kb_split": SPLIT_ID,
              "kb_heldout_seen": leaked, "kb_queries": queries, "score": quality_score(mine),
              "kb_intents": store.intent_keys(), "eval_sets": stamp["eval_sets"],
              "heldout": mine_heldout, "e5_heldout": e5_saved["heldout"]}
    if quantize != "none":
        report["quantize"] = quantize
    (model_dir / ("verified.json" if quantize == "none" else f"verified.{quantize}.json")).write_text(json.dumps(report, indent=2))
    return report
