"""How good a generator's paraphrases are, so that generator `auto` can rank by what it generates.

A pair-trained ALBERT-sim's encoder score says nothing about its generation head: the best encoder so
far (`albert-sim-trained-g4`) is the worse generator. This module measures the generation itself: the
top-``top`` beam candidates for ``sources`` FAQ standard questions of the knowledge base, judged by e5
(the teacher) at its calibrated paraphrase threshold. *Useful* = a paraphrase the expansion filter
would keep (no knowledge-base question within cosine 0.98). The result is written beside the model
as ``expansion.json`` by `callbot model rate-generator` and by `python -m benchmarks expansion`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nlu.data.corpora import corpus_file, read_pairs, sample

REPORT = "expansion.json"
SOURCES = 30
TOP = 10


def teacher_threshold(teacher) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """e5's best-accuracy paraphrase threshold on LCQMC dev (0.90 when the research corpora are absent)."""
    from nlu.similarity_eval import encoder_scores, evaluate_pairs

    try:
        dev = sample(read_pairs(corpus_file("lcqmc_train.tsv"), "dev"), 2000, seed=11)
    except Exception:
        return 0.90, "default 0.90 (no corpora to calibrate on)"
    r = evaluate_pairs(encoder_scores(teacher, dev), dev)
    return r["threshold"], f"best-accuracy threshold on LCQMC dev ({r['accuracy']:.1f}% acc)"


def measure(generator, bias: float, sources: list[str], teacher, threshold: float,  # type: ignore[no-untyped-def]
            existing: set[str], existing_vecs: np.ndarray, top: int = TOP) -> dict[str, Any]:
    """Top-``top`` beam candidates per source at copy bias ``bias``: paraphrase (teacher ≥ threshold),
    new (not in the KB), useful (a paraphrase with no KB question within cosine 0.98)."""
    generator.copy_bias = bias
    total = paraphrase = new = useful = 0
    examples = []
    for src in sources:
        cands = [c for c in generator.beam(src, top) if c and c != src][:top]
        if not cands:
            continue
        vecs = teacher.encode([src, *cands])
        sims = vecs[1:] @ vecs[0]
        total += len(cands)
        paraphrase += int((sims >= threshold).sum())
        near_kb = (vecs[1:] @ existing_vecs.T).max(axis=1) >= 0.98 if len(existing_vecs) else np.zeros(len(cands), bool)
        useful += int(((sims >= threshold) & ~near_kb).sum())
        new += sum(c not in existing for c in cands)
        if len(examples) < 10:
            best = int(np.argmax(sims))
            examples.append((src, cands[best], round(float(sims[best]), 4)))
    return {"candidates": total, "paraphrase_share": round(paraphrase / max(1, total), 4),
            "new_to_kb_share": round(new / max(1, total), 4), "useful_share": round(useful / max(1, total), 4),
            "examples": examples}


def faq_sources(kb, n: int = SOURCES) -> tuple[list[str], set[str]]:  # type: ignore[no-untyped-def]
    """``n`` FAQ standard questions (a fixed sample) and every FAQ question text already in the KB."""
    faq = kb.intents("faq")
    existing = {q["text"] for it in faq for q in kb.intent(it["id"])["extension_questions"]} | {it["standard_question"] for it in faq}
    return [it["standard_question"] for it in sample(faq, n, seed=2)], existing


def rate(generator, model_dir: Path, teacher, kb, n_sources: int = SOURCES) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Measure ``generator`` at its configured copy bias and save ``expansion.json`` in ``model_dir``."""
    threshold, how = teacher_threshold(teacher)
    sources, existing = faq_sources(kb, n_sources)
    existing_list = sorted(existing)
    result = measure(generator, generator.copy_bias, sources, teacher, threshold, existing, teacher.encode(existing_list))
    report = save(model_dir, {**result, "copy_bias": generator.copy_bias, "sources": len(sources),
                              "teacher_threshold": threshold, "threshold_from": how, "kb_version": kb.store.kb_version()})
    return report


def save(model_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    report = {**report, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (model_dir / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=2))
    return report


def best_generator(models_dir: Path, copy_bias: float) -> Path | None:
    """Generator `auto`: among pair-trained ALBERT-sims (the only ones with a trained generation head),
    measured generation at the copy bias in use first, then verified before unverified ranked like
    `albert-sim`, then the newest weights; None when there is none."""
    from nlu.model_cache import verified_rank

    trained = []
    for meta_file in models_dir.glob("albert-sim-*/callbot_encoder.json"):
        try:
            stage = json.loads(meta_file.read_text()).get("stage")
        except (OSError, ValueError):
            continue  # an unreadable model is not a candidate; `callbot model list` reports it
        if stage == "pairs" and (meta_file.parent / "model.safetensors").is_file():
            trained.append(meta_file.parent)

    def rank(d: Path) -> tuple[tuple[bool, float], bool, tuple[bool, bool, float], float]:
        generation = generation_rank(d, copy_bias)
        mtime = (d / "model.safetensors").stat().st_mtime
        try:
            report = json.loads((d / "verified.json").read_text())
        except (OSError, ValueError):
            return generation, False, (False, False, 0.0), mtime
        return generation, True, verified_rank(report), mtime

    return max(trained, key=rank) if trained else None


def generation_rank(model_dir: Path, copy_bias: float) -> tuple[bool, float]:
    """Sort key for generator `auto`: models measured at the copy bias in use first, by useful share."""
    try:
        report = json.loads((model_dir / REPORT).read_text())
    except (OSError, ValueError):
        return False, 0.0
    if report.get("copy_bias") != copy_bias or not isinstance(report.get("useful_share"), int | float):
        return False, 0.0
    return True, float(report["useful_share"])
