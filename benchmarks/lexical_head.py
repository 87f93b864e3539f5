"""The lexical head's cost on the matching path: `Matcher.match` p50 on the demo knowledge base with
`nlu.lexical_head_weight` 0 vs 0.05, the same dev caller replies, rounds alternating in one run (the ratio is
against the head-off baseline measured alongside). `CALLBOT_BENCH_MODEL` names the encoder (default: the release)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, save, time_calls

WEIGHTS = (0.0, 0.05)
ROUNDS = 2


def run(console: Console) -> dict:
    from callbot.context import get_settings, get_store
    from nlu import heldout
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher

    s = get_settings()
    encoder = SentenceEncoder(s.models_dir / os.environ.get("CALLBOT_BENCH_MODEL", "albert-sim-release"))
    queries = [u.text for u in heldout.load("dev") if u.set_name == "caller_replies"][:400]
    p50s: dict[float, list[float]] = {w: [] for w in WEIGHTS}
    for _ in range(ROUNDS):
        for w in WEIGHTS:
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
    results = {"model": encoder.name, "p50_ms": {str(w): v for w, v in p50s.items()}, "ratio": round(min(p50s[0.05]) / base, 3)}
    save("lexical_head", results)
    return results
