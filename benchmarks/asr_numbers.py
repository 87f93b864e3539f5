"""What transcript normalisation (voice/normalize.py) does for the NLU on number-bearing ASR text.

`voice/eval_sets/asr_numbers.jsonl`: 160 utterances written as Whisper transcribes them (digits for amounts, times,
percentages and codes; spaces around digits; Traditional characters in a quarter of them), by a writer who read only
the writer brief (`python -m nlu.writer_brief`), never the knowledge base: 60 FAQ questions, 60 in-call lines, 40 of
both kinds largely in Traditional characters. Each is matched three ways by the served matcher (release encoder, its
thresholds and lexical weight): as transcribed, after Simplified conversion and space/punctuation clean-up only, and
fully normalised (digits → Chinese numerals below five digits, as the product does). Decision accuracy per style,
and normalisation's time against the match's measured alongside (`CALLBOT_BENCH_MODEL` names the encoder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, save, time_calls

SET = Path(__file__).resolve().parent.parent / "voice" / "eval_sets" / "asr_numbers.jsonl"


def variants() -> dict[str, object]:
    from voice.normalize import normalize_transcript

    return {"as transcribed": lambda t: t, "simplified + spacing": lambda t: normalize_transcript(t, numerals=False),
            "normalised (product)": normalize_transcript}


def run(console: Console) -> dict:
    from callbot.context import get_settings, get_store
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher, Thresholds

    s = get_settings()
    path = s.models_dir / os.environ.get("CALLBOT_BENCH_MODEL", "albert-sim-release")
    rows = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    matcher = Matcher(get_store(), SentenceEncoder(path), s.cache_dir / "vectors" / "bench-asr-numbers",
                      Thresholds.for_model(path), **s.nlu.heads(path))
    matcher.refresh(force=True)
    matcher.wait_for_intent_head()
    styles = sorted({r["style"] for r in rows})
    right: dict[str, dict[str, list[bool]]] = {v: {st: [] for st in styles} for v in variants()}
    for name, fn in variants().items():
        for r in rows:
            result = matcher.match(fn(r["text"]), r.get("scenario"))  # type: ignore[operator]
            top = result.ranking[0].intent if result.ranking else None
            right[name][r["style"]].append(result.decision != "fallback" and top == r["intent"])
    table = Table("text given to the NLU", *(f"{st} (n {len(right['as transcribed'][st])})" for st in styles), "all")
    results: dict[str, dict[str, float]] = {}
    for name, per in right.items():
        flat = [x for v in per.values() for x in v]
        results[name] = {st: round(sum(v) / len(v), 3) for st, v in per.items()} | {"all": round(sum(flat) / len(flat), 3)}
        table.add_row(name, *(f"{results[name][st]:.3f}" for st in styles), f"{results[name]['all']:.3f}")
    normalise = variants()["normalised (product)"]
    texts = iter([r["text"] for r in rows] * 20)
    norm_ms = percentiles(time_calls(lambda: normalise(next(texts)), 1000, warmup=50))["p50"]  # type: ignore[operator]
    match_ms = percentiles(time_calls(lambda: matcher.match(next(texts), None), 300, warmup=20))["p50"]
    console.print(f"{path.name}, demo KB, {len(rows)} number-bearing ASR-style utterances ({SET.name})")
    console.print(table)
    console.print(f"normalise p50 {norm_ms:.3f} ms vs Matcher.match p50 {match_ms:.2f} ms (×{norm_ms / match_ms:.3f} of a match)")
    out = {"model": path.name, "accuracy": results, "normalise_p50_ms": norm_ms, "match_p50_ms": match_ms,
           "ratio_to_match": round(norm_ms / match_ms, 4)}
    save("asr_numbers", out)
    return out
