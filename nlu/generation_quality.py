"""How useful an expander's candidates are: the measure generator `auto`, `callbot model rate-generator`
and `python -m benchmarks expansion` use.

For a fixed sample of ``sources`` FAQ standard questions of the knowledge base, the top ``top``
candidates a method returns after its filter (nlu.expansion.expand_with, the serving matcher). A
candidate is *useful* when (a) the judge, an e5-small Matcher over the knowledge base with e5's
thresholds, matches it (decision ``match``) to the source's own intent; (b) its text is not in the
knowledge base (punctuation and case aside); (c) no knowledge-base question is within e5 cosine 0.98;
(d) it is not a truncation of the source (only characters deleted, in order: nlu.expansion.is_truncation) —
e5 places such fragments in the source's intent, and by reading they were most of what the beam proposed.
``useful_share`` is per slot (useful / (top × sources)): a method that returns fewer candidates does not
score higher for it. When e5-small is also the serving encoder, the filter already applies (a)'s
matcher and (c)'s threshold, so the share among returned candidates is near 1 by construction and
per slot the number to compare. The result is written beside a generator as ``expansion.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nlu.data.corpora import corpus_file, read_pairs, sample

REPORT = "expansion.json"
SOURCES = 30
TOP = 10
NEAR_DUPLICATE = 0.98
# Which measure a report holds: the first (until this one) took the raw beam top-10, judged by e5's
# cosine to the source at the LCQMC threshold; shares of the two are not comparable.
MEASURE = "judge-matcher-after-filter"


def teacher_threshold(teacher) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """e5's best-accuracy paraphrase threshold on LCQMC dev (0.90 when the research corpora are absent)."""
    from nlu.similarity_eval import encoder_scores, evaluate_pairs

    try:
        dev = sample(read_pairs(corpus_file("lcqmc_train.tsv"), "dev"), 2000, seed=11)
    except Exception:
        return 0.90, "default 0.90 (no corpora to calibrate on)"
    r = evaluate_pairs(encoder_scores(teacher, dev), dev)
    return r["threshold"], f"best-accuracy threshold on LCQMC dev ({r['accuracy']:.1f}% acc)"


def judge_matcher(store, teacher):  # type: ignore[no-untyped-def]
    """The judge: an e5-small Matcher over the knowledge base, e5's own thresholds (a different model
    from the serving encoder whenever an ALBERT-sim serves)."""
    from nlu.matcher import Matcher, Thresholds
    from nlu.service import vector_dir

    judge = Matcher(store, teacher, vector_dir(store.url), Thresholds.for_model(Path(teacher.path)))
    judge.refresh(force=True)
    return judge


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def measure(sources: list[tuple[str, str]], method: str, serving, judge, load_generator: Callable | None,  # type: ignore[no-untyped-def]
            threshold: float, existing: set[str], existing_vecs: np.ndarray, top: int = TOP,
            scenario: str = "faq", n_examples: int = 20) -> dict[str, Any]:
    """The top ``top`` candidates of ``method`` for each (standard question, intent) in ``sources``,
    judged as in the module docstring. Also per generator (``by_source``) and, for comparison with the
    first measure, the share e5 puts at or above its paraphrase ``threshold`` to the source."""
    from nlu.expansion import canonical, expand_with, is_truncation
    from nlu.service import form_check

    known = {canonical(e) for e in existing}
    totals = dict.fromkeys(("candidates", "same_intent", "new", "useful", "teacher_paraphrase"), 0)
    by_source: dict[str, dict[str, int]] = {}
    examples: list[dict[str, Any]] = []
    notes: set[str] = set()
    for src, intent in sources:
        expansion = expand_with(serving, src, top, method, scenario, intent, load_generator, form=form_check(serving))
        notes.update(expansion.notes)
        cands = expansion.candidates[:top]
        if not cands:
            continue
        vecs = judge.encoder.encode([src, *(c.text for c in cands)])
        to_source = vecs[1:] @ vecs[0]
        near_kb = (vecs[1:] @ existing_vecs.T).max(axis=1) >= NEAR_DUPLICATE if len(existing_vecs) else np.zeros(len(cands), bool)
        for c, cos, near in zip(cands, to_source, near_kb, strict=True):
            verdict = judge.match(c.text, scenario, k=2)
            same = verdict.decision == "match" and verdict.top is not None and verdict.top.intent == intent
            new = canonical(c.text) not in known
            useful = same and new and not bool(near) and not is_truncation(src, c.text)
            row = by_source.setdefault(c.source, dict.fromkeys(totals, 0))
            for tally in (totals, row):
                tally["candidates"] += 1
                tally["same_intent"] += same
                tally["new"] += new
                tally["useful"] += useful
                tally["teacher_paraphrase"] += bool(cos >= threshold)
            if useful:
                examples.append({"source_question": src, "candidate": c.text, "source": c.source, "score": c.score})
    slots = top * len(sources)
    return {
        "measure": MEASURE, "method": method, "sources": len(sources), "slots": slots, **totals,
        "useful_share": _share(totals["useful"], slots),
        "useful_of_candidates": _share(totals["useful"], totals["candidates"]),
        # The judge's same-intent share (this key held e5's paraphrase-threshold share in the first measure).
        "paraphrase_share": _share(totals["same_intent"], totals["candidates"]),
        "teacher_paraphrase_share": _share(totals["teacher_paraphrase"], totals["candidates"]),
        "new_to_kb_share": _share(totals["new"], totals["candidates"]),
        "by_source": {s: {**r, "useful_share": _share(r["useful"], slots), "useful_of_candidates": _share(r["useful"], r["candidates"])}
                      for s, r in sorted(by_source.items())},
        "notes": sorted(notes), "examples": _spread(examples, n_examples),
    }


def _spread(examples: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` examples, one per source question in turn, so a report shows many questions."""
    by_question: dict[str, list[dict[str, Any]]] = {}
    for e in examples:
        by_question.setdefault(e["source_question"], []).append(e)
    out: list[dict[str, Any]] = []
    rank = 0
    while len(out) < n and any(rank < len(v) for v in by_question.values()):
        out += [v[rank] for v in by_question.values() if rank < len(v)][: n - len(out)]
        rank += 1
    return out


def faq_sources(kb, n: int = SOURCES) -> tuple[list[str], set[str]]:  # type: ignore[no-untyped-def]
    """``n`` FAQ standard questions (a fixed sample) and every FAQ question text already in the KB."""
    pairs, existing = faq_source_intents(kb, n)
    return [q for q, _ in pairs], existing


def faq_source_intents(kb, n: int = SOURCES) -> tuple[list[tuple[str, str]], set[str]]:  # type: ignore[no-untyped-def]
    """The sample of faq_sources as (standard question, intent name), and the FAQ question texts."""
    faq = kb.intents("faq")
    existing = {q["text"] for it in faq for q in kb.intent(it["id"])["extension_questions"]} | {it["standard_question"] for it in faq}
    return [(it["standard_question"], it["name"]) for it in sample(faq, n, seed=2)], existing


def setting(kb, teacher) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What every measurement on ``kb`` needs once: serving matcher, judge, threshold, the KB's FAQ
    question texts and their e5 vectors."""
    from nlu.service import get_matcher

    threshold, how = teacher_threshold(teacher)
    _, existing = faq_source_intents(kb, 0)
    judge = judge_matcher(kb.store, teacher)
    serving = get_matcher()
    serving.refresh()
    return {"serving": serving, "judge": judge, "threshold": threshold, "threshold_from": how, "existing": existing,
            "existing_vecs": teacher.encode(sorted(existing))}


def rate(generator, model_dir: Path, teacher, kb, n_sources: int = SOURCES, method: str = "beam") -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Measure ``method`` with ``generator`` (at its configured copy bias) and save ``expansion.json`` in
    ``model_dir``. Generator `auto` ranks by this file's useful_share, so rate a generator with beam."""
    s = setting(kb, teacher)
    sources, _ = faq_source_intents(kb, n_sources)
    result = measure(sources, method, s["serving"], s["judge"], lambda: generator, s["threshold"], s["existing"],
                     s["existing_vecs"])
    return save(model_dir, {**result, "copy_bias": generator.copy_bias, "teacher_threshold": s["threshold"],
                            "threshold_from": s["threshold_from"], "serving_model": s["serving"].encoder.name,
                            "judge_model": teacher.name, "kb_version": kb.store.kb_version()})


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
