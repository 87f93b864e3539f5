"""Speech recognition: one interface (``SpeechRecognizer``), one module per backend."""

from voice.asr.base import SpeechRecognizer, Transcript, recognizer_from_settings

__all__ = ["SpeechRecognizer", "Transcript", "recognizer_from_settings"]
