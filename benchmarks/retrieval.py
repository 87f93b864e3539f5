"""Top-1/2/3 intent retrieval on the knowledge base, leave-one-out, per encoder (and BM25).

Queries are the questions no model trains on (the held-out fifth of every intent's extension questions,
nlu.data.kb_split), so pair-trained models are not rewarded for memorising their training pairs."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import available_models, save
from callbot.context import get_store
from callbot.settings import get_settings
from nlu.calibration import _leave_one_out
from nlu.data.kb_split import is_clean_query
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.matcher import Matcher, Thresholds
from nlu.service import vector_dir

QUERIES = 800


def run(console: Console) -> dict:
    store = get_store()
    store.migrate()
    results = {}
    for name, path in available_models():
        enc = SentenceEncoder(path, threads=2)
        matcher = Matcher(store, enc, vector_dir(get_settings().db_url), Thresholds.for_model(path))
        matcher.refresh(force=True)
        loo = _leave_one_out(matcher, QUERIES, only=lambda e: is_clean_query(e.text))
        gold = np.array([g for _, _, g in loo])
        results[name] = {f"top{k}": round(float(((gold >= 0) & (gold < k)).mean()), 4) for k in (1, 2, 3)}
    table = Table("model", "top-1", "top-2", "top-3", "top-1 vs e5", title=f"KB leave-one-out retrieval (up to {QUERIES} never-trained questions)")
    base = results.get("e5-small-v1", {}).get("top1")
    for name, r in results.items():
        table.add_row(name, f"{r['top1']:.3f}", f"{r['top2']:.3f}", f"{r['top3']:.3f}", f"{r['top1'] / base:.3f}×" if base else "-")
    console.print(table)
    save("retrieval", results)
    return results
