"""Bot lines as phone audio: synthesised once per text and engine, cached on disk, at the phone's rate.

A script prompt with no variables is the same on every call; warming the cache with the knowledge base's
prompts when the gateway starts means a call pays for synthesis only for what changes per customer. A line
made from a prompt with variables (您申购的{stock_name}中签{allotted_shares}股…) is said as its pieces: the
fixed text between the variables comes from the cache (warmed too), and only the customer's values (华源科技,
500) are synthesised live, then the pieces are joined.
"""

from __future__ import annotations

import hashlib
import logging
import re
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

    def use_templates(self, templates: list[str]) -> None:
        """Prompts with ``{variables}``: a line matching one is said piece by piece (see the module docstring)."""
        compiled = []
        for template in templates:
            parts = re.split(r"\{[a-z_]+\}", template)
            # A single word character said on its own (的, 在) sounds wrong: such a template is said whole.
            if len(parts) > 1 and not any(len(p) == 1 and re.match(r"\w", p) for p in parts):
                pattern = "(.+?)".join(re.escape(p) for p in parts)
                compiled.append((re.compile(f"^{pattern}$", re.S), parts))
        self._templates = compiled

    def _pieces(self, text: str) -> list[tuple[str, bool]] | None:
        """(piece, is fixed text) in order, when ``text`` is a filled-in template."""
        for pattern, parts in getattr(self, "_templates", []):
            found = pattern.match(text)
            if found:
                pieces: list[tuple[str, bool]] = []
                for n, part in enumerate(parts):
                    if part:
                        pieces.append((part, True))
                    if n < len(found.groups()):
                        pieces.append((found.group(n + 1), False))
                return pieces
        return None

    def speak(self, text: str) -> tuple[np.ndarray, float]:
        """16-bit samples of ``text`` at the phone rate, and the milliseconds synthesis took (0 when cached)."""
        pieces = None if self.cached(text) else self._pieces(text)
        if pieces is not None:
            audio, spent = [], 0.0
            for piece, _fixed in pieces:
                if not re.search(r"\w", piece):  # punctuation alone: a short pause
                    audio.append(np.zeros(int(0.15 * self.rate), np.int16))
                    continue
                samples, ms = self._speak_whole(piece)
                audio.append(samples)
                spent += ms
            return np.concatenate(audio), spent
        return self._speak_whole(text)

    def _speak_whole(self, text: str) -> tuple[np.ndarray, float]:
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
        """Synthesise the static prompts and the fixed pieces of the others; returns how many were new."""
        self.use_templates([t for t in texts if "{" in t])
        pieces = [p for t in texts if "{" in t for p in re.split(r"\{[a-z_]+\}", t) if re.search(r"\w", p)]
        made = 0
        for text in [t for t in texts if "{" not in t] + pieces:
            if text and not self.cached(text):
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
