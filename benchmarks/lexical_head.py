"""The lexical head's cost on the matching path: `Matcher.match` p50 on the demo knowledge base with the head off, with
the model's tuned weight on characters only, and as served (its tuned weight, shortest reply and sound grams — pinyin
per reply), the same dev caller replies, rounds alternating in one run (ratios against the head-off baseline measured
alongside). `CALLBOT_BENCH_MODEL` names the encoder (default: the release; 0.05 for a model never tuned)."""

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
    tuned = Thresholds.for_model(path)
    weight = tuned.lexical_head_weight or 0.05
    configs = {"head off": {},
               f"{weight:g}, characters": {"lexical_head_weight": weight},
               f"{weight:g} as served (sound {'on' if tuned.lexical_sound else 'off'}, {tuned.lexical_min_chars}+ chars)":
                   {"lexical_head_weight": weight, "lexical_sound": tuned.lexical_sound, "lexical_min_chars": tuned.lexical_min_chars}}
    queries = [u.text for u in heldout.load("dev") if u.set_name == "caller_replies"][:400]
    p50s: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(ROUNDS):
        for name, heads in configs.items():
            matcher = Matcher(get_store(), encoder, s.cache_dir / "vectors" / "bench-lexical", **heads)
            matcher.refresh(force=True)
            matcher.wait_for_intent_head()
            it = iter(queries * 3)
            p50s[name].append(percentiles(time_calls(lambda m=matcher: m.match(next(it), None), 300, warmup=20))["p50"])  # noqa: B023
    base = min(p50s["head off"])
    table = Table("lexical head", "Matcher.match p50 ms (best of rounds)", "× head off")
    for name, values in p50s.items():
        table.add_row(name, f"{min(values):.2f}", f"{min(values) / base:.2f}")
    console.print(f"{encoder.name}, demo KB, {len(queries)} dev caller replies")
    console.print(table)
    served = list(configs)[-1]
    results = {"model": encoder.name, "p50_ms": {k: min(v) for k, v in p50s.items()},
               "ratio": round(min(p50s[served]) / base, 3),
               "ratio_characters_only": round(min(p50s[list(configs)[1]]) / base, 3)}
    save("lexical_head", results)
    return results
