"""What every recogniser takes (an ``AudioClip`` of one caller turn) and gives back (a ``Transcript``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from voice.audio import AudioClip


@dataclass(frozen=True)
class Transcript:
    text: str  # normalised for the NLU (Simplified Chinese, numbers as the KB writes them)
    raw: str  # what the recogniser wrote
    ms: float  # decoding time
    audio_s: float
    dropped: str | None = None  # why the recogniser's output was discarded (no speech, a hallucination…)
    details: dict = field(default_factory=dict)


class SpeechRecognizer(Protocol):
    name: str

    def transcribe(self, clip: AudioClip, hint: str | None = None) -> Transcript:
        """One turn of caller speech; ``hint`` is text the call expects (biases decoding where supported)."""
        ...


def recognizer_from_settings() -> SpeechRecognizer:
    from callbot.settings import get_settings

    voice = get_settings().voice
    if voice.asr == "vosk":
        from voice.asr.vosk_backend import VoskRecognizer

        return VoskRecognizer(voice.vosk_model)
    from voice.asr.whisper import WhisperRecognizer, ensure_whisper_model

    return WhisperRecognizer(ensure_whisper_model(get_settings().models_dir))
