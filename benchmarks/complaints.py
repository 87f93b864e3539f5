"""Complaint classifier (issue 19): FMLC with ASL against its ablations, on data no variant was tuned on.

Variants, all trained in this run on the same training file and scored on the same test file:
FMLC-ASL (label graph + asymmetric loss: the seed's model), FMLC-BCE, LWAN-ASL (identity adjacency: no graph)
and LWAN-BCE (BiGRU + label attention with BCE: the seed's BiGRU-LWAN baseline); FMLC-ASL over e5-small token
states instead of word2vec + BiGRU; and the lexical baseline the product used before (label-name bigrams).
Each trained variant runs with several seeds (mean ± sd: 450 test complaints are few). Tail labels have fewer
than 100 training examples.

Data sets: ``product`` (nlu/complaints/data: train.jsonl → heldout.jsonl, written by different writers) and, when
the research corpus is present, ``loan`` (../shared/corpora/complaints_jutousu_loan_train.jsonl: real complaints
about cash-loan apps, split 80/20 here by a fixed seed; read in place, never copied into the repository).

`python -m benchmarks complaints` (env: CALLBOT_BENCH_SEEDS=3, CALLBOT_BENCH_COMPLAINT_SETS=product,loan,
CALLBOT_BENCH_E5=1). Also prints the single-complaint latency of FMLC-ASL against the lexical baseline and e5.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.common import ROOT, percentiles, save, time_calls
from callbot.settings import get_settings
from nlu.complaints.classifier import ComplaintModel
from nlu.complaints.data import Complaint, LabelSet, load_complaints
from nlu.complaints.metrics import multilabel_report
from nlu.complaints.service import DATA_DIR, e5_loader
from nlu.complaints.train import TrainConfig

VARIANTS = {"FMLC-ASL": {"loss": "asl", "graph": True}, "FMLC-BCE": {"loss": "bce", "graph": True},
            "LWAN-ASL": {"loss": "asl", "graph": False}, "LWAN-BCE": {"loss": "bce", "graph": False}}
LOAN = "complaints_jutousu_loan_train.jsonl"


def _loan_split(path: Path, seed: int = 20261201) -> tuple[list[Complaint], list[Complaint]]:
    """80/20, stratified on each complaint's rarest label so tail labels land on both sides."""
    complaints = load_complaints(path)
    counts = LabelSet.of(complaints)
    n = dict(zip(counts.codes, counts.counts, strict=True))
    groups: dict[str, list[Complaint]] = {}
    for c in complaints:
        groups.setdefault(min(c.labels, key=lambda x: n[x]), []).append(c)
    rng = random.Random(seed)
    train, test = [], []
    for key in sorted(groups):
        items = groups[key]
        rng.shuffle(items)
        cut = max(1, round(len(items) * 0.2))
        test += items[:cut]
        train += items[cut:]
    return train, test


def data_sets() -> dict[str, tuple[list[Complaint], list[Complaint]]]:
    wanted = os.environ.get("CALLBOT_BENCH_COMPLAINT_SETS", "product,loan").split(",")
    out = {}
    if "product" in wanted:
        out["product"] = (load_complaints(DATA_DIR / "train.jsonl"), load_complaints(DATA_DIR / "heldout.jsonl"))
    corpora = get_settings().corpora_dir or (ROOT.parent / "shared" / "corpora")
    if "loan" in wanted and (corpora / LOAN).is_file():
        out["loan"] = _loan_split(corpora / LOAN)
    return out


def _lexical(train: list[Complaint], test: list[Complaint]) -> dict[str, Any] | None:
    """The pre-model baseline, on the product taxonomy only (it reads the label names and descriptions)."""
    from actions.complaints import score_by_label_words

    taxonomy = yaml.safe_load((ROOT / "knowledge_base" / "demo" / "complaint_labels.yml").read_text(encoding="utf-8"))
    leaves = [(x["code"], x["name"], x.get("description", "")) for x in taxonomy["complaint_labels"] if x.get("parent")]
    labels = LabelSet.of(train)
    if not set(labels.codes) <= {c for c, _n, _d in leaves}:
        return None
    y, _ = labels.matrix(test)
    pred = y * 0
    at = {c: i for i, c in enumerate(labels.codes)}
    for row, c in enumerate(test):
        for code in score_by_label_words(c.text, leaves):
            if code in at:
                pred[row, at[code]] = 1
    report = multilabel_report(y, pred, list(labels.codes), list(labels.counts))
    report["latency"] = percentiles(time_calls(lambda: score_by_label_words(test[0].text, leaves), 200))
    return report


def _summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("micro_f1", "macro_f1", "tail_micro_f1", "tail_macro_f1")
    out: dict[str, Any] = {}
    for k in keys:
        values = [r[k] for r in reports]
        out[k] = round(statistics.mean(values), 4)
        out[k + "_sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    out["precision"] = round(statistics.mean(r["all"]["micro_precision"] for r in reports), 4)
    out["recall"] = round(statistics.mean(r["all"]["micro_recall"] for r in reports), 4)
    return out


def run(console: Console) -> None:
    console.width = max(console.width, 150)  # the table has eight columns of "0.683±0.012"
    seeds = [13 + i for i in range(int(os.environ.get("CALLBOT_BENCH_SEEDS", "3")))]
    use_e5 = os.environ.get("CALLBOT_BENCH_E5", "1") != "0"
    results: dict[str, Any] = {"seeds": seeds}
    shared_cache = get_settings().cache_dir  # word vectors are reused between runs of the same data
    for name, (train, test) in data_sets().items():
        labels = LabelSet.of(train)
        console.print(f"[bold]{name}[/bold]: {len(train)} training / {len(test)} test complaints, {len(labels)} labels, "
                      f"{len(labels.tail())} tail (< 100 training examples)")
        rows: dict[str, Any] = {}
        kept: dict[str, ComplaintModel] = {}
        variants = dict(VARIANTS)
        if use_e5 and name == "product":
            variants["FMLC-ASL-e5"] = {"loss": "asl", "graph": True, "encoder": "e5"}
        encoder, memo = None, {}  # e5 and its token states: loaded and computed once for every seed
        for variant, settings in variants.items():
            reports, seconds = [], []
            for seed in seeds:
                cfg = TrainConfig(seed=seed, **settings)
                if cfg.encoder == "e5" and encoder is None:
                    encoder = e5_loader(get_settings().models_dir)()
                started = time.monotonic()
                model = ComplaintModel.train(train, cfg, shared_cache, encoder=encoder if cfg.encoder == "e5" else None,
                                             progress=False, state_memo=memo)
                seconds.append(time.monotonic() - started)
                reports.append(model.evaluate(test))
                kept.setdefault(variant, model)
            rows[variant] = {**_summary(reports), "train_s": round(statistics.mean(seconds), 1), "runs": reports}
            console.print(f"  {variant}: micro-F1 {rows[variant]['micro_f1']:.3f} macro-F1 {rows[variant]['macro_f1']:.3f} "
                          f"tail macro-F1 {rows[variant]['tail_macro_f1']:.3f} ({rows[variant]['train_s']} s per training)")
        lexical = _lexical(train, test)
        table = Table(title=f"{name}: test set written apart (mean ± sd over {len(seeds)} seeds)")
        for col in ("model", "micro-F1", "macro-F1", "tail micro-F1", "tail macro-F1", "P", "R", "train s"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for variant, r in rows.items():
            table.add_row(variant, *(f"{r[k]:.3f}±{r[k + '_sd']:.3f}" for k in ("micro_f1", "macro_f1", "tail_micro_f1", "tail_macro_f1")),
                          f"{r['precision']:.3f}", f"{r['recall']:.3f}", str(r["train_s"]))
        if lexical is not None:
            table.add_row("lexical (before)", *(f"{lexical[k]:.3f}" for k in ("micro_f1", "macro_f1", "tail_micro_f1", "tail_macro_f1")),
                          f"{lexical['all']['micro_precision']:.3f}", f"{lexical['all']['micro_recall']:.3f}", "-")
        console.print(table)
        base = rows["LWAN-BCE"]
        for k in ("macro_f1", "tail_macro_f1"):
            console.print(f"  FMLC-ASL vs LWAN-BCE {k}: {rows['FMLC-ASL'][k] - base[k]:+.3f}")
        results[name] = {"train": len(train), "test": len(test), "labels": len(labels), "tail": len(labels.tail()),
                         "variants": {v: {k: x for k, x in r.items() if k != "runs"} for v, r in rows.items()},
                         "lexical": {k: lexical[k] for k in ("micro_f1", "macro_f1", "tail_micro_f1", "tail_macro_f1", "latency")} if lexical else None,
                         "per_label_fmlc_asl": rows["FMLC-ASL"]["runs"][0]["per_label"]}
        if name == "product":
            results["latency"] = _latency(console, kept, test, lexical)
            from nlu.complaints.chart import per_label_chart

            chart = save("complaints-product", results).with_name("complaints-per-label.png")
            per_label_chart(rows["FMLC-ASL"]["runs"][0], chart)
            console.print(f"per-label F1 chart: {chart}")
    path = save("complaints-" + "+".join(k for k in results if k not in ("seeds", "latency")), results)
    console.print(f"saved {path}")


def _latency(console: Console, models: dict[str, ComplaintModel], test: list[Complaint], lexical: dict[str, Any] | None) -> dict[str, Any]:
    """One complaint at a time, as the action server classifies them."""
    texts = [c.text for c in test[:100]]
    out: dict[str, Any] = {}
    for variant in ("FMLC-ASL", "FMLC-ASL-e5"):
        if variant in models:
            featurizer = models[variant].featurizer
            if hasattr(featurizer, "memo"):
                featurizer.memo = None  # the training run's token states must not be looked up
            it = iter(texts * 3)
            out[variant] = percentiles(time_calls(lambda m=models[variant], i=it: m.classify([next(i)]), len(texts)))
    if lexical is not None:
        out["lexical"] = lexical["latency"]
    base = out["FMLC-ASL"]["p50"]
    for name, figures in out.items():
        console.print(f"  latency {name}: p50 {figures['p50']:.2f} ms, p95 {figures['p95']:.2f} ms"
                      + ("" if name == "FMLC-ASL" else f" ({figures['p50'] / base:.2f}× FMLC-ASL)"))
    return out
