"""Speech synthesis: one interface (``SpeechSynthesizer``), one module per engine."""

from voice.tts.base import SpeechSynthesizer, synthesizer_from_settings

__all__ = ["SpeechSynthesizer", "synthesizer_from_settings"]
