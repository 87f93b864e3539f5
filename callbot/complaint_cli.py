"""`callbot complaint train | classify | eval`: the multi-label complaint classifier from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from callbot.cli import app, err, out
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError

complaint_app = typer.Typer(help="The complaint classifier (FMLC: label attention, label graph, asymmetric loss).",
                            no_args_is_help=True)
app.add_typer(complaint_app, name="complaint")
BATCH = 64
ModelDir = Annotated[Optional[Path], typer.Option("--model-dir", help="A trained model's directory (default: the installed model).")]


def _model_dir(model_dir: Path | None) -> Path:
    from nlu.complaints.service import installed_dir

    return model_dir or installed_dir(get_settings().cache_dir)


def _load(model_dir: Path | None):  # type: ignore[no-untyped-def]
    from nlu.complaints.classifier import ComplaintModel
    from nlu.complaints.service import e5_loader

    return ComplaintModel.load(_model_dir(model_dir), e5_loader(get_settings().models_dir))


def _emit(obj: object) -> None:
    out.print(json.dumps(obj, ensure_ascii=False), markup=False, highlight=False, soft_wrap=True)


@complaint_app.command("train")
def complaint_train(
    data: Annotated[Optional[Path], typer.Option(help="JSON lines {\"text\", \"labels\": [...]} (default: the product's training file).")] = None,
    model_dir: ModelDir = None,
    loss: Annotated[str, typer.Option(help="asl (asymmetric loss) or bce (the baseline).")] = "asl",
    graph: Annotated[bool, typer.Option("--graph/--no-graph", help="The label co-occurrence graph; --no-graph uses identity adjacency.")] = True,
    encoder: Annotated[str, typer.Option(help="e5 (e5-small int8 token states: the product's, measured better) or gru (word2vec + BiGRU, the seed's).")] = "e5",
    epochs: Annotated[int, typer.Option(help="At most this many epochs (early stopping on a 10 % validation split).")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 13,
    word_dim: Annotated[int, typer.Option(help="Word vector size.")] = 300,
    word_corpus: Annotated[int, typer.Option(help="Sentences of the package corpus the word vectors learn from (0: all).")] = 0,
    force: Annotated[bool, typer.Option(help="Train even if the model in --model-dir is current (same data and settings).")] = False,
) -> None:
    """Train a model (word vectors, then the network twice: with a validation split, then on everything)."""
    from dataclasses import asdict

    from nlu.complaints.classifier import META, ComplaintModel, training_sha1
    from nlu.complaints.data import load_complaints
    from nlu.complaints.service import TRAIN_FILE, e5_loader
    from nlu.complaints.train import TrainConfig

    if loss not in ("asl", "bce"):
        raise CallbotError(f"--loss {loss}: use asl or bce.")
    if encoder not in ("gru", "e5"):
        raise CallbotError(f"--encoder {encoder}: use gru or e5.")
    settings = get_settings()
    source = data or TRAIN_FILE
    complaints = load_complaints(source)
    cfg = TrainConfig(loss=loss, graph=graph, encoder=encoder, epochs=epochs, seed=seed, word_dim=word_dim, word_corpus=word_corpus)
    target = _model_dir(model_dir)
    meta_file = target / META
    if not force and meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("config") == asdict(cfg) and meta.get("training_examples") == len(complaints) \
                and meta.get("training_sha1") == training_sha1(complaints):
            out.print(f"Complaint model is up to date ({target}).")
            return
    encoder_obj = e5_loader(settings.models_dir)() if encoder == "e5" else None
    model = ComplaintModel.train(complaints, cfg, settings.cache_dir, encoder=encoder_obj, progress=True, source=str(source))
    model.save(target)
    m = model.meta
    out.print(f"Complaint model {m['name']} written to {target}: {m['training_examples']} complaints, {len(model.labels)} labels "
              f"({len(model.labels.tail())} tail), {m['graph_edges']} label-graph edges; validation score {m['validation']['score']:.3f} "
              f"at epoch {m['validation']['best_epoch']}, threshold {model.threshold}; {m['seconds']} s.")


@complaint_app.command("classify")
def complaint_classify(
    input: Annotated[Path, typer.Option("--input", help="One complaint per line (UTF-8 or GBK); - for stdin.")],
    model_dir: ModelDir = None,
) -> None:
    """One JSON line per input line, in order: {"text", "labels": [{"label", "score"}]} (+ "truncated", "tentative")."""
    from knowledge_base.textfiles import read_lines

    model = _load(model_dir)
    batch: list[str] = []
    empty = 0
    for line in read_lines(input):
        batch.append(line)
        if len(batch) >= BATCH:
            for result in model.classify(batch):
                _emit(result.as_json())
            empty += sum(1 for t in batch if not t.strip())
            batch.clear()
    for result in model.classify(batch):
        _emit(result.as_json())
    empty += sum(1 for t in batch if not t.strip())
    if empty:
        err.print(f"note: {empty} empty line(s) got no labels.")


@complaint_app.command("eval")
def complaint_eval(
    test: Annotated[Path, typer.Option("--test", help="Labelled JSON lines {\"text\", \"labels\"} the model never saw.")],
    model_dir: ModelDir = None,
    chart: Annotated[Optional[Path], typer.Option(help="Write a per-label F1 chart (PNG) here.")] = None,
) -> None:
    """Micro/macro F1 over all and tail labels, per-label scores, as JSON (tail: under 100 training examples)."""
    from nlu.complaints.data import load_complaints

    model = _load(model_dir)
    report = model.evaluate(load_complaints(test))
    if "note" in report:
        err.print(f"note: {report['note']} Unknown: {', '.join(sorted(report['unknown_labels']))}.")
    if chart is not None:
        from nlu.complaints.chart import per_label_chart

        per_label_chart(report, chart, _label_names())
        err.print(f"chart written to {chart}")
    _emit(report)


def _label_names() -> dict[str, str]:
    """Label codes → the names staff gave them in the knowledge base (codes when there is no KB)."""
    from sqlalchemy import select

    from callbot.context import get_store
    from knowledge_base.models import ComplaintLabel

    try:
        with get_store().session() as s:
            return {lb.code: lb.name for lb in s.scalars(select(ComplaintLabel))}
    except Exception:  # noqa: BLE001 - a chart still draws without names
        return {}


@complaint_app.command("relabel")
def complaint_relabel(
    since: Annotated[Optional[str], typer.Option(help="Only conversations started on or after this date (YYYY-MM-DD).")] = None,
    model_dir: ModelDir = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would change; write nothing.")] = False,
) -> None:
    """Label stored complaints again with the model: every conversation with a customer turn understood as a
    complaint gets the labels of what the customer said in those turns (replacing earlier labels, e.g. the lexical
    baseline's or "unclassified"). Prints the count per label."""
    from collections import Counter
    from datetime import datetime

    from sqlalchemy import select

    from callbot.context import get_store
    from knowledge_base.models import ComplaintLabel, Conversation, ConversationTurn

    model = _load(model_dir)
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise CallbotError(f"--since {since!r}: a date such as 2026-12-01.") from None
    store = get_store()
    store.migrate()
    per_label: Counter[str] = Counter()
    changed = seen = 0
    with store.session("complaint-relabel") as s:
        known = set(s.scalars(select(ComplaintLabel.code)))
        query = select(Conversation).where(Conversation.id.in_(
            select(ConversationTurn.conversation_id).where(ConversationTurn.intent == "complain")))
        if start is not None:
            query = query.where(Conversation.started_at >= start)
        for conv in s.scalars(query):
            said = [t.text for t in s.scalars(select(ConversationTurn).where(
                ConversationTurn.conversation_id == conv.id, ConversationTurn.intent == "complain").order_by(ConversationTurn.seq))]
            labels: list[str] = []
            for result in model.classify(said):
                labels += [x.label for x in result.labels if x.label in known and x.label not in labels]
            labels = sorted(labels) or ["unclassified"]
            seen += 1
            per_label.update(labels)
            if labels != sorted(conv.complaint_labels or []):
                changed += 1
                if not dry_run:
                    conv.complaint_labels = labels
    out.print(f"{seen} conversations with complaints; {changed} {'would change' if dry_run else 'relabelled'}.")
    for label, n in per_label.most_common():
        out.print(f"  {label}: {n}")
