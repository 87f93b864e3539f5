"""Spearman×100 and best-threshold accuracy on our dev pairs (LCQMC, BQ): BM25 vs every encoder."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from benchmarks.common import available_models, save
from nlu.data.corpora import corpus_file, read_pairs, sample
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.similarity_eval import bm25_scores, encoder_scores, evaluate_pairs

DEV_CAP = 2000


def run(console: Console) -> dict:
    sets = {}
    for label, name in (("LCQMC", "lcqmc_train.tsv"), ("BQ", "bq_train.tsv")):
        path = corpus_file(name)
        if path.is_file():
            sets[label] = sample(read_pairs(path, "dev"), DEV_CAP, seed=11)
    if not sets:
        console.print("[yellow]similarity: no corpora found (CALLBOT_CORPORA_DIR); skipped[/yellow]")
        return {}
    results: dict[str, dict] = {"bm25-char-bigram": {k: evaluate_pairs(bm25_scores(v), v) for k, v in sets.items()}}
    for name, path in available_models():
        enc = SentenceEncoder(path, threads=2)
        results[name] = {k: evaluate_pairs(encoder_scores(enc, v), v) for k, v in sets.items()}
    table = Table("model", *[f"{k} spearman" for k in sets], *[f"{k} acc" for k in sets], "mean spearman vs e5",
                  title=f"dev pairs ({', '.join(f'{k} {len(v)}' for k, v in sets.items())})")
    base = results.get("e5-small-v1")
    for name, r in results.items():
        mean = sum(r[k]["spearman"] for k in sets) / len(sets)
        ratio = f"{mean / (sum(base[k]['spearman'] for k in sets) / len(sets)):.3f}×" if base else "-"
        table.add_row(name, *[f"{r[k]['spearman']:.2f}" for k in sets], *[f"{r[k]['accuracy']:.2f}" for k in sets], ratio)
    console.print(table)
    save("similarity", results)
    return results
