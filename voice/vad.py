"""Voice activity and end of turn, frame by frame: Silero VAD v6 (the ONNX file inside faster-whisper).

The gateway feeds each call's incoming audio as it arrives (20 ms RTP frames at 8 kHz). ``Endpointer.feed``
returns events:

- ``SpeechStarted`` once the caller has spoken for ``min_speech_ms`` (barge-in: stop the prompt). Coughs and
  clicks are shorter and do not count.
- ``UtteranceEnded(clip)`` after ``end_silence_ms`` of silence following speech: the turn to transcribe, with
  a little audio from before the speech started, because the VAD fires a few windows late.

Telephone audio (8 kHz) is upsampled for the VAD only, by linear interpolation that carries the last sample
across frames (resampling each 20 ms frame on its own would put a click at every frame edge); the utterance
handed to the ASR is the caller's audio at its own rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from voice.audio import AudioClip

RATE = 16_000
WINDOW = 512  # samples at 16 kHz: 32 ms, what Silero v6 takes
CONTEXT = 64


@lru_cache(maxsize=1)
def _session():  # type: ignore[no-untyped-def]
    import faster_whisper
    import onnxruntime

    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)


class SpeechProbability:
    """Speech probability of consecutive 32 ms windows of one stream."""

    def __init__(self) -> None:
        self.context = np.zeros(CONTEXT, np.float32)
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)

    def __call__(self, window: np.ndarray) -> float:
        x = np.concatenate([self.context, window.astype(np.float32)])[None, :]
        out, self.h, self.c = _session().run(None, {"input": x, "h": self.h, "c": self.c})
        self.context = window[-CONTEXT:].astype(np.float32)
        return float(np.asarray(out).reshape(-1)[0])


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float  # stream time when speech was confirmed


@dataclass(frozen=True)
class SpeechPaused:
    """The caller has been quiet for ``pause_ms``: the turn may be over. The gateway starts transcribing ``clip``
    now and keeps the result if the turn does end with no more speech (saves most of the decoding wait)."""
    clip: AudioClip
    last_speech_s: float


@dataclass(frozen=True)
class UtteranceEnded:
    clip: AudioClip  # at the endpointer's rate
    started_s: float
    ended_s: float  # stream time of the last speech window


@dataclass
class Endpointer:
    threshold: float = 0.5
    min_speech_ms: int = 200
    end_silence_ms: int = 700
    preroll_ms: int = 300  # audio kept from before the first speech of the turn (the VAD fires a few windows late)
    # Speech this close before the speech that starts the turn belongs to it: the lone 对 in 对，是我 is too short to
    # start the turn, but it is the answer.
    join_gap_ms: int = 600
    max_utterance_s: float = 30.0  # a caller who never pauses is cut here and transcribed in parts
    pause_ms: int | None = None  # when set: a SpeechPaused event after this much silence inside a turn
    _vad: SpeechProbability = field(default_factory=SpeechProbability)
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _history: list[tuple[np.ndarray, bool]] = field(default_factory=list)  # recent (window, speech?), for the pre-roll
    _utterance: list[np.ndarray] = field(default_factory=list)
    _speech_run: int = 0
    _silence_run: int = 0
    _in_speech: bool = False
    _windows: int = 0
    _started_at: int = 0
    _last_speech: int = 0

    rate: int = 8000  # of the audio fed in: 8000 (the phone) or 16000
    _last: float = 0.0

    def feed(self, clip: AudioClip) -> list[SpeechStarted | SpeechPaused | UtteranceEnded]:
        if clip.rate != self.rate:
            raise ValueError(f"this endpointer takes {self.rate} Hz audio, got {clip.rate} Hz")
        self._pending = np.concatenate([self._pending, clip.samples.astype(np.float32)])
        step = WINDOW * self.rate // RATE
        events: list[SpeechStarted | SpeechPaused | UtteranceEnded] = []
        while len(self._pending) >= step:
            window, self._pending = self._pending[:step], self._pending[step:]
            events.extend(self._step(window, self._for_vad(window)))
        return events

    def _for_vad(self, window: np.ndarray) -> np.ndarray:
        if self.rate == RATE:
            return window
        previous = np.concatenate([[self._last], window[:-1]])
        self._last = float(window[-1])
        mid = (previous + window) / 2  # 8 → 16 kHz: the midpoint before each sample, then the sample
        return np.stack([mid, window], axis=1).reshape(-1).astype(np.float32)

    def _turn_start(self) -> list[np.ndarray]:
        """The history from the first speech that belongs to this turn (no gap over join_gap_ms), less the pre-roll."""
        flags = [speech for _w, speech in self._history]
        first = len(flags) - self._speech_run
        gap, gap_limit = 0, self.join_gap_ms / self._ms(1)
        for i in range(first - 1, -1, -1):
            if flags[i]:
                first, gap = i, 0
            else:
                gap += 1
                if gap > gap_limit:
                    break
        start = max(0, first - int(self.preroll_ms / self._ms(1)))
        return [w for w, _speech in self._history[start:]]

    def _ms(self, windows: int) -> float:
        return windows * WINDOW * 1000 / RATE

    def _step(self, window: np.ndarray, vad_window: np.ndarray) -> list[SpeechStarted | SpeechPaused | UtteranceEnded]:
        events: list[SpeechStarted | SpeechPaused | UtteranceEnded] = []
        speech = self._vad(vad_window) >= self.threshold
        self._windows += 1
        if not self._in_speech:
            self._history.append((window, speech))
            self._speech_run = self._speech_run + 1 if speech else 0
            keep = int((self.preroll_ms + self.join_gap_ms + 500) / self._ms(1)) + self._speech_run
            self._history = self._history[-max(keep, 1):]
            if self._ms(self._speech_run) >= self.min_speech_ms:
                self._in_speech, self._silence_run = True, 0
                self._utterance, self._history = self._turn_start(), []
                self._started_at = self._windows - self._speech_run
                self._last_speech = self._windows
                events.append(SpeechStarted(self._windows * WINDOW / RATE))
            return events
        self._utterance.append(window)
        if speech:
            self._silence_run, self._last_speech = 0, self._windows
        else:
            self._silence_run += 1
            if self.pause_ms is not None and self._silence_run == max(1, round(self.pause_ms / self._ms(1))):
                events.append(SpeechPaused(AudioClip(np.concatenate(self._utterance), self.rate), self._last_speech * WINDOW / RATE))
        too_long = len(self._utterance) * WINDOW / RATE >= self.max_utterance_s
        if self._ms(self._silence_run) >= self.end_silence_ms or too_long:
            samples = np.concatenate(self._utterance)
            events.append(UtteranceEnded(AudioClip(samples, self.rate), self._started_at * WINDOW / RATE,
                                         self._last_speech * WINDOW / RATE))
            self._in_speech, self._utterance, self._speech_run, self._silence_run = False, [], 0, 0
        return events
