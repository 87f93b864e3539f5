"""The compliance guard in front of every bot reply (issue 18): time per sentence, served encoder vs e5-small.

Each sentence of a compliance file (default: the spent held-out sets e–h, JSON lines with "text") is judged alone,
as the action server judges one outgoing line: lexicon, then the classifier on the frozen encoder's vector. Timed
in the same run: the lexicon alone (the floor), the guard on the served encoder (``compliance.encoder``, the head
trained in the model cache by `callbot compliance train`), and the guard on e5-small int8 (the encoder it used
before; its head is trained here, briefly, only so that the same code path runs). Accuracy is not measured here:
`callbot compliance eval --test FILE` on a held-out set does that.

`python -m benchmarks compliance` (env: CALLBOT_BENCH_COMPLIANCE_FILES=a.jsonl,b.jsonl; CALLBOT_BENCH_N=400).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, save, time_calls
from callbot.context import get_store
from callbot.settings import get_settings
from nlu.compliance.classifier import DATA_DIR, TRAIN_FILES, HeadConfig, load_examples, save_head, train_head
from nlu.compliance.guard import ComplianceGuard
from nlu.compliance.lexicon import RuleLexicon
from nlu.compliance.service import compliance_encoder, head_dir


def _sentences() -> list[str]:
    names = os.environ.get("CALLBOT_BENCH_COMPLIANCE_FILES", "")
    files = [Path(n) for n in names.split(",") if n] or [DATA_DIR / f"heldout_{k}.jsonl" for k in "efgh"]
    texts = [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[: int(os.environ.get("CALLBOT_BENCH_N", "400"))]


def _per_sentence(guard: ComplianceGuard, texts: list[str]) -> dict[str, float]:
    it = iter(texts * 2)
    return percentiles(time_calls(lambda: guard.verdict(next(it)), len(texts), warmup=10))


def run(console: Console) -> dict[str, Any]:
    from nlu.encoders.sentence_encoder import shared_encoder
    from nlu.model_cache import resolve_model

    settings = get_settings()
    store = get_store()
    store.migrate()
    texts = _sentences()
    served = compliance_encoder(settings.models_dir)
    guard = ComplianceGuard(store, served, head_dir(settings.cache_dir))
    if not guard.uses_classifier:
        raise SystemExit("No compliance head for the served encoder: run `callbot compliance train` first.")
    e5 = shared_encoder(resolve_model(settings.models_dir, "e5-small"), "int8")
    rows: dict[str, dict[str, float]] = {"lexicon only": _per_sentence(ComplianceGuard(store), texts)}
    rows[f"guard on {served.name} ({settings.compliance.quantize})"] = _per_sentence(guard, texts)
    if e5.cache_id != served.cache_id:
        with console.status("Training a head on e5-small int8 for the baseline (timing only)…"):
            lexicon = RuleLexicon(store)
            trained = train_head(e5, load_examples([DATA_DIR / f for f in TRAIN_FILES]), [], HeadConfig(epochs=5),
                                 lexicon_matches=lambda t: lexicon.scan(t))
            baseline_dir = save_head(trained, Path(tempfile.mkdtemp(prefix="callbot-compliance-e5-")))
        rows["guard on e5-small (int8)"] = _per_sentence(ComplianceGuard(store, e5, baseline_dir), texts)
    base = rows.get("guard on e5-small (int8)")
    table = Table("guard", "sentences", "p50 ms", "p95 ms", "× e5-small guard (p50)")
    for name, r in rows.items():
        table.add_row(name, str(r["n"]), f"{r['p50']:.2f}", f"{r['p95']:.2f}", f"{r['p50'] / base['p50']:.2f}" if base else "—")
    console.print(table)
    data = {"sentences": len(texts), "threads": __import__("torch").get_num_threads(), "rows": rows}
    save("compliance", data)
    return data
