"""Bot lines as phone audio: synthesised once per text and engine, cached on disk, at the phone's rate.

A script prompt with no variables is the same on every call; warming the cache with the knowledge base's
prompts when the gateway starts means a call pays for synthesis only for lines with a customer's name,
amount or date in them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np

from voice.audio import AudioClip, read_audio, write_wav
from voice.tts.base import SpeechSynthesizer

log = logging.getLogger(__name__)


class SpokenLines:
    def __init__(self, synthesizer: SpeechSynthesizer, cache_dir: Path, rate: int = 8000):
        self.synthesizer = synthesizer
        self.rate = rate
        self.cache_dir = cache_dir / synthesizer.name / str(rate)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one synthesis at a time: the engines are single-threaded processes

    def _path(self, text: str) -> Path:
        return self.cache_dir / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".wav")

    def cached(self, text: str) -> bool:
        return self._path(text).is_file()

    def speak(self, text: str) -> tuple[np.ndarray, float]:
        """16-bit samples of ``text`` at the phone rate, and the milliseconds synthesis took (0 when cached)."""
        path = self._path(text)
        if path.is_file():
            return _int16(read_audio(path)), 0.0
        started = time.perf_counter()
        with self._lock:
            clip = self.synthesizer.synthesize(text).resampled(self.rate)
        tmp = path.with_suffix(".tmp.wav")
        write_wav(clip, tmp)
        tmp.replace(path)  # another worker never reads half a file
        return _int16(clip), (time.perf_counter() - started) * 1000

    def warm(self, texts: list[str]) -> int:
        made = 0
        for text in texts:
            if text and "{" not in text and not self.cached(text):
                try:
                    self.speak(text)
                    made += 1
                except Exception as exc:  # a line that cannot be synthesised now is synthesised (or reported) live
                    log.warning("could not pre-synthesise a prompt", extra={"fields": {"error": str(exc)[:200]}})
        return made


def _int16(clip: AudioClip) -> np.ndarray:
    samples = clip.samples
    if samples.dtype != np.int16:
        samples = np.clip(np.asarray(samples, np.float64) * (32767 if np.abs(samples).max(initial=0) <= 1.0 else 1), -32768, 32767)
    return samples.astype(np.int16)


def script_prompts() -> list[str]:
    """Every prompt and reprompt of the knowledge base's scenarios (the static ones are cached at start)."""
    from sqlalchemy import select

    from callbot.context import get_store
    from knowledge_base.models import ScriptStep

    with get_store().session() as s:
        rows = s.execute(select(ScriptStep.prompt, ScriptStep.reprompt)).all()
    return [t for prompt, reprompt in rows for t in (prompt, reprompt) if t]
