"""`callbot nlu match | embed | eval | calibrate | expand | mine`."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from callbot.cli import app, out
from callbot.context import get_store
from knowledge_base.errors import CallbotError

nlu_app = typer.Typer(help="Intent matching, sentence embeddings, evaluation.", no_args_is_help=True)
app.add_typer(nlu_app, name="nlu")


@nlu_app.command("match")
def match(
    text: Annotated[str, typer.Argument(help="What the caller said.")],
    scenario: Annotated[Optional[str], typer.Option("--scenario", "-s", help="Scenario code (default: all dialogue intents + FAQ).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many intents to list.")] = 3,
    model: Annotated[Optional[str], typer.Option(help="e5-small, albert-sim or a checkpoint path (default from settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full JSON result.")] = False,
) -> None:
    """Match TEXT against the knowledge base and show the top-k intents."""
    from nlu.service import get_matcher

    get_store().migrate()
    result = get_matcher(model).match(text, scenario, k).as_dict()
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    table = Table("intent", "kind", "scenario", "score", "matched question", title=f"{result['decision']} → {result['intent']['name']}")
    for r in result["ranking"]:
        table.add_row(r["intent"], r["kind"], r["scenario"], f"{r['score']:.4f}", r["question"])
    out.print(table)
    out.print(f"kb version {result['kb_version']} · model {result['model']} · {result['latency_ms']:.1f} ms")


@nlu_app.command("embed")
def embed(
    input: Annotated[Path, typer.Option("--input", "-i", help="UTF-8 text file, one sentence per line (empty lines allowed).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .npy matrix.")],
    model: Annotated[str, typer.Option(help="e5-small, albert-sim or a checkpoint path.")] = "e5-small",
    batch_size: Annotated[int, typer.Option(help="Sentences per forward pass.")] = 64,
) -> None:
    """Write float32 L2-normalised vectors, one row per input line, in input order."""
    from nlu.service import load_encoder

    if not input.is_file():
        raise CallbotError(f"Input file {input} does not exist.")
    raw = input.read_bytes()
    if b"\x00" in raw:
        raise CallbotError(f"{input} looks binary (contains NUL bytes); give a UTF-8 text file, one sentence per line.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CallbotError(f"{input}:{line}: not valid UTF-8; convert it (e.g. `iconv -f GBK -t UTF-8`).") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not an extra empty sentence
    lines = [line.rstrip("\r") for line in lines]
    encoder, _ = load_encoder(model)
    vecs = encoder.encode(lines, batch_size=batch_size, progress=len(lines) > 200).astype(np.float32)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as fh:
        np.save(fh, vecs)
    out.print(f"Wrote {vecs.shape[0]}×{vecs.shape[1]} float32 vectors to {output} ({encoder.name}).")


@nlu_app.command("eval")
def evaluate(
    test: Annotated[Path, typer.Option("--test", "-t", help='JSON lines: {"text", "intent", "scenario"}.')],
    model: Annotated[Optional[str], typer.Option(help="e5-small, albert-sim or a checkpoint path.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
) -> None:
    """Top-1/2/3 accuracy, per-intent recall and the confusions, as JSON."""
    from nlu.evaluation import evaluate_file
    from nlu.service import get_matcher

    get_store().migrate()
    report = evaluate_file(get_matcher(model), test)
    text = json.dumps(report, ensure_ascii=False, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")


@nlu_app.command("calibrate")
def calibrate_cmd(
    model: Annotated[Optional[str], typer.Option(help="e5-small, albert-sim or a checkpoint path.")] = None,
    max_queries: Annotated[int, typer.Option(help="Leave-one-out queries sampled from the knowledge base.")] = 800,
) -> None:
    """Calibrate match/ambiguous/fallback thresholds on the knowledge base; store them with the model."""
    from nlu.calibration import calibrate, save_thresholds
    from nlu.service import get_matcher

    get_store().migrate()
    matcher = get_matcher(model)
    th, report = calibrate(matcher, max_queries=max_queries)
    path = save_thresholds(matcher.encoder.path, th, report)
    out.print_json(json.dumps(report, ensure_ascii=False))
    out.print(f"Thresholds saved to {path}")


@nlu_app.command("expand")
def expand_cmd(
    text: Annotated[str, typer.Argument(help="A standard or extension question to paraphrase.")],
    n: Annotated[int, typer.Option("-n", help="How many paraphrases to keep.")] = 20,
    method: Annotated[str, typer.Option(help="mixed (the generators that measured useful, one filter and ranking), beam (the "
                                              "ALBERT-sim's beam search), sample (top-k sampling), rewrite (spoken-style rewrites) "
                                              "or thesaurus (synonym swaps).")] = "mixed",
    scenario: Annotated[Optional[str], typer.Option("--scenario", "-s", help="Scenario whose questions count as existing.")] = None,
    intent: Annotated[Optional[str], typer.Option(help="Drop candidates the matcher places in another intent than this one "
                                                       "(default: the intent TEXT is a question of, if it is one).")] = None,
) -> None:
    """Generate extension-question candidates for TEXT, filtered and ranked, each with its score and source."""
    from nlu.service import expand

    get_store().migrate()
    result = expand(text, n, method, scenario, intent)
    by_source = ", ".join(f"{s} {k}" for s, k in result.generated.items()) or "none"
    table = Table("#", "candidate", "source", "score", "similarity", "nearest intent",
                  title=f"{len(result.candidates)} kept of {result.total} generated ({method}: {by_source})")
    for i, c in enumerate(result.candidates, 1):
        table.add_row(str(i), c.text, c.source, f"{c.score:.4f}", f"{c.similarity:.4f}", c.nearest_intent or "")
    out.print(table)
    for note in result.notes:
        out.print(f"Note: {note}")


@nlu_app.command("mine")
def mine_cmd(
    since: Annotated[Optional[datetime], typer.Option(help="Only caller turns from this date on (YYYY-MM-DD).", formats=["%Y-%m-%d"])] = None,
    scenario: Annotated[Optional[str], typer.Option("--scenario", "-s", help="Only conversations of this scenario.")] = None,
    limit: Annotated[int, typer.Option(help="Most proposals to show (or store).")] = 50,
    min_conversations: Annotated[int, typer.Option(help="Propose a wording only if this many conversations used it.")] = 1,
    store: Annotated[bool, typer.Option("--store", help="Add the proposals as pending extension questions for staff review.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Propose extension questions from what callers said: wordings the bot matched to one intent
    without ambiguity that the knowledge base does not have yet (personal data is never proposed)."""
    from nlu.service import mine_conversations

    get_store().migrate()
    report = mine_conversations(since, scenario, limit, min_conversations, store_as_pending=store, progress=sys.stderr.isatty())
    if as_json:
        out.print_json(json.dumps(report, ensure_ascii=False, default=str))
        return
    table = Table("#", "caller wording", "intent", "score", "nearest question", "conversations",
                  title=f"{_count(len(report['proposed']), 'proposal')} from {_count(report['distinct'], 'distinct wording')} "
                        f"({_count(report['utterances'], 'caller turn')})")
    for i, m in enumerate(report["proposed"], 1):
        table.add_row(str(i), m["text"], f"{m['scenario']}/{m['intent']}", f"{m['score']:.4f}", m["nearest_question"],
                      str(m["conversations"]))
    out.print(table)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report["skipped"].items())) or "none"
    out.print(f"Not proposed: {skipped}.")
    if store:
        out.print(f"Stored {len(report['stored'])} as pending extension questions (source: mined); review them in the admin UI.")
    elif report["proposed"]:
        out.print("Run again with --store to add them to the review queue.")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
