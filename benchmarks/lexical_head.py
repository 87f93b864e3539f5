"""The lexical head's cost on the matching path: `Matcher.match` p50 on the demo knowledge base with the head off vs
the model's tuned weight (0.05 for a model never tuned), the same dev caller replies, rounds alternating in one run (the ratio is
against the head-off baseline measured alongside). `CALLBOT_BENCH_MODEL` names the encoder (default: the release)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, save, time_calls

ROUNDS = 2


def run(console: Console) -> dict:
    from callbot.context import get_settings, get_store
    from nlu import heldout
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher, Thresholds

    s = get_settings()
    path = s.models_dir / os.environ.get("CALLBOT_BENCH_MODEL", "albert-sim-release")
    encoder = SentenceEncoder(path)
    weights = (0.0, Thresholds.for_model(path).lexical_head_weight or 0.05)
    queries = [u.text for u in heldout.load("dev") if u.set_name == "caller_replies"][:400]
    p50s: dict[float, list[float]] = {w: [] for w in weights}
    for _ in range(ROUNDS):
        for w in weights:
            matcher = Matcher(get_store(), encoder, s.cache_dir / "vectors" / "bench-lexical", lexical_head_weight=w)
            matcher.refresh(force=True)
            matcher.wait_for_intent_head()
            it = iter(queries * 3)
            p50s[w].append(percentiles(time_calls(lambda m=matcher: m.match(next(it), None), 300, warmup=20))["p50"])  # noqa: B023
    base = min(p50s[0.0])
    table = Table("lexical head weight", "Matcher.match p50 ms (best of rounds)", "× head off")
    for w, values in p50s.items():
        table.add_row(f"{w:g}", f"{min(values):.2f}", f"{min(values) / base:.2f}")
    console.print(f"{encoder.name}, demo KB, {len(queries)} dev caller replies")
    console.print(table)
    results = {"model": encoder.name, "p50_ms": {str(w): v for w, v in p50s.items()}, "ratio": round(min(p50s[weights[1]]) / base, 3)}
    save("lexical_head", results)
    return results
